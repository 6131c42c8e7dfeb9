//! Against the shared real control plane: server-side dry runs of the chart, the plain
//! manifests and the sidecar example in a namespace that enforces the restricted profile, and a
//! `helm install` and `helm uninstall`.

use std::collections::BTreeMap;

use weir_e2e::ControlPlane;

use crate::support::{
    chart, chart_dir, documents, everything_on_but_service_monitor, helm, helm_in, kind,
    kubectl_in, path_str, repo,
};
use crate::{Error, TestResult};

/// `helm template` applies to kube-apiserver with `--dry-run=server` (every object valid, the
/// CRD-less ServiceMonitor aside), with default values and every option on, in a namespace
/// that enforces the restricted profile, and draws no Pod Security warning.
#[tokio::test]
async fn the_rendered_chart_applies_with_a_server_side_dry_run() -> TestResult {
    let plane = ControlPlane::shared_with_crds().await?;
    let ns = restricted_namespace(plane, "chart-dry").await?;
    let (_dir, values) = everything_on_but_service_monitor()?;
    for extra in [vec![], vec!["-f".to_owned(), path_str(&values)]] {
        let mut args = vec!["template", "weir", &chart(), "--namespace", &ns]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        args.extend(extra);
        let rendered = helm(&args)?;
        let (out, err) = kubectl_in(
            plane,
            ["apply", "--dry-run=server", "-f", "-"],
            Some(&rendered),
        )?;
        assert!(out.contains("deployment.apps/weir-dataplane created (server dry run)"));
        assert_no_pod_security_warning(&err);
    }
    Ok(())
}

/// `kubectl apply -k deploy/ --dry-run=server` succeeds into weir-system (which enforces the
/// restricted profile) with no Pod Security warning; a pod without the restricted settings in
/// the same namespace would draw one, so the silence means something.
#[tokio::test]
async fn the_plain_manifests_apply_with_a_server_side_dry_run() -> TestResult {
    let plane = ControlPlane::shared_with_crds().await?;
    // Dry-run objects cannot live in a namespace that a dry run only pretends to create.
    let namespace = repo().join("deploy/namespace.yaml");
    kubectl_in(plane, ["apply", "-f", &path_str(&namespace)], None)?;
    let (out, err) = kubectl_in(
        plane,
        [
            "apply",
            "--dry-run=server",
            "-k",
            &path_str(&repo().join("deploy")),
        ],
        None,
    )?;
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/loadbalancerpools.weir.dev",
        "deployment.apps/weir-controller",
        "deployment.apps/weir-dataplane",
        "clusterrole.rbac.authorization.k8s.io/weir-controller",
        "networkpolicy.networking.k8s.io/weir-dataplane",
    ] {
        assert!(out.contains(object), "{object} missing from:\n{out}");
    }
    assert_no_pod_security_warning(&err);

    let careless = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: careless, namespace: weir-system }
spec:
  selector: { matchLabels: { app: careless } }
  template:
    metadata: { labels: { app: careless } }
    spec: { containers: [{ name: c, image: example.com/c:1 }] }
"#;
    let (_, err) = kubectl_in(
        plane,
        ["apply", "--dry-run=server", "-f", "-"],
        Some(careless),
    )?;
    assert!(err.contains("would violate PodSecurity"), "{err}");
    Ok(())
}

/// The sidecar example applies with `--dry-run=server` into a restricted namespace: its pool is
/// valid for the CRD and its pod draws no Pod Security warning.
#[tokio::test]
async fn the_sidecar_example_applies_with_a_server_side_dry_run() -> TestResult {
    let plane = ControlPlane::shared_with_crds().await?;
    let ns = restricted_namespace(plane, "sidecar").await?;
    let example = path_str(&chart_dir().join("examples/sidecar.yaml"));
    let (out, err) = kubectl_in(
        plane,
        ["apply", "--dry-run=server", "-n", &ns, "-f", &example],
        None,
    )?;
    assert!(
        out.contains("loadbalancerpool.weir.dev/payments created (server dry run)"),
        "{out}"
    );
    assert_no_pod_security_warning(&err);
    Ok(())
}

/// `helm install` (without `--wait`: no node runs pods) creates every object of the release,
/// two releases of the same name in two namespaces do not collide on cluster-scoped names,
/// the first pool NOTES suggests is valid, and `helm uninstall` removes every object.
#[tokio::test]
async fn helm_install_creates_every_object_and_helm_uninstall_removes_them() -> TestResult {
    let plane = ControlPlane::shared_with_crds().await?;
    let first = restricted_namespace(plane, "install").await?;
    let second = restricted_namespace(plane, "install").await?;
    for ns in [&first, &second] {
        helm_in(plane, ["install", "weir", &chart(), "--namespace", ns])?;
    }

    let manifest = helm_in(plane, ["get", "manifest", "weir", "--namespace", &first])?;
    let objects = documents(&manifest)?;
    let kinds: BTreeMap<&str, usize> = objects.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(kind(o)).or_default() += 1;
        m
    });
    let expected = [
        ("ClusterRole", 1),
        ("ClusterRoleBinding", 1),
        ("Deployment", 2),
        ("NetworkPolicy", 2),
        ("PodDisruptionBudget", 2),
        ("Role", 1),
        ("RoleBinding", 1),
        ("Service", 2),
        ("ServiceAccount", 2),
    ];
    assert_eq!(kinds, BTreeMap::from(expected));
    let (found, _) = kubectl_in(
        plane,
        ["get", "--namespace", &first, "-f", "-", "-o", "name"],
        Some(&manifest),
    )?;
    assert_eq!(found.lines().count(), objects.len(), "{found}");
    let (crd, _) = kubectl_in(plane, ["get", "crd", "loadbalancerpools.weir.dev"], None)?;
    assert!(crd.contains("loadbalancerpools.weir.dev"));

    let notes = helm_in(plane, ["get", "notes", "weir", "--namespace", &first])?;
    let pool = notes
        .split("<<'POOL'\n")
        .nth(1)
        .and_then(|rest| rest.split("\n  POOL").next())
        .ok_or_else(|| format!("no example pool in the NOTES:\n{notes}"))?;
    let pool: String = pool
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    kubectl_in(plane, ["apply", "--dry-run=server", "-f", "-"], Some(&pool))?;
    assert!(notes.contains("kubectl get lbp -A"), "{notes}");

    helm_in(plane, ["uninstall", "weir", "--namespace", &first])?;
    let (left, _) = kubectl_in(
        plane,
        [
            "get",
            "--namespace",
            &first,
            "-f",
            "-",
            "-o",
            "name",
            "--ignore-not-found",
        ],
        Some(&manifest),
    )?;
    assert_eq!(left.trim(), "", "left after helm uninstall");
    let other = helm_in(plane, ["get", "manifest", "weir", "--namespace", &second])?;
    let (found, _) = kubectl_in(
        plane,
        ["get", "--namespace", &second, "-f", "-", "-o", "name"],
        Some(&other),
    )?;
    assert_eq!(found.lines().count(), objects.len(), "{found}");
    helm_in(plane, ["uninstall", "weir", "--namespace", &second])?;
    Ok(())
}

/// A namespace of the control plane whose pods must meet the restricted profile, warning about
/// workloads that would not.
async fn restricted_namespace(plane: &ControlPlane, prefix: &str) -> Result<String, Error> {
    let ns = plane.namespace(prefix).await?;
    kubectl_in(
        plane,
        [
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ],
        None,
    )?;
    Ok(ns)
}

fn assert_no_pod_security_warning(stderr: &str) {
    assert!(
        !stderr.contains("PodSecurity"),
        "Pod Security warnings:\n{stderr}"
    );
}
