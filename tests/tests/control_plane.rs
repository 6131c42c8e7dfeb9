//! Smoke tests of the test control plane: what Weir's controller will rely on behaves as on a
//! real cluster. All but the last share one control plane, each in a namespace of its own.

use std::net::TcpStream;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use weir_e2e::ControlPlane;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.weir.dev
spec:
  group: e2e.weir.dev
  scope: Namespaced
  names: { plural: widgets, singular: widget, kind: Widget }
  versions:
    - name: v1
      served: true
      storage: true
      subresources: { status: {} }
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [replicas]
              properties:
                replicas: { type: integer, minimum: 0 }
            status:
              type: object
              properties:
                ready: { type: integer }
                phase: { type: string }
"#;

/// `kubectl apply` of a CRD and of an object of it; the schema is enforced; status goes only
/// through the status subresource (server-side apply) and reads back, without a new generation.
#[tokio::test]
async fn crd_apply_and_status_subresource() -> TestResult {
    let plane = ControlPlane::shared();
    let ns = plane.namespace("crd").await?;
    plane
        .kubectl_with_input(["apply", "-f", "-"], WIDGET_CRD)
        .await?;
    plane
        .kubectl([
            "wait",
            "--for=condition=Established",
            "crd/widgets.e2e.weir.dev",
            "--timeout=30s",
        ])
        .await?;

    let widget = |replicas: i64| {
        format!(
            "apiVersion: e2e.weir.dev/v1\nkind: Widget\nmetadata: {{ name: w }}\n\
             spec: {{ replicas: {replicas} }}\nstatus: {{ phase: SetByApply }}\n"
        )
    };
    // The first create within 2 s of a CRD becoming Established waits 2 s (kube-apiserver's
    // guard for HA set-ups): tests that need CRDs should install them once per test binary.
    let refused = plane
        .kubectl_with_input(["apply", "-n", &ns, "-f", "-"], &widget(-1))
        .await
        .expect_err("the schema forbids replicas < 0");
    assert!(refused.to_string().contains("spec.replicas"), "{refused}");
    plane
        .kubectl_with_input(["apply", "-n", &ns, "-f", "-"], &widget(3))
        .await?;

    let gvk = GroupVersionKind::gvk("e2e.weir.dev", "v1", "Widget");
    let widgets = Api::<DynamicObject>::namespaced_with(
        plane.client(),
        &ns,
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    );
    let created = widgets.get("w").await?;
    assert_eq!(created.data["spec"]["replicas"], 3);
    assert_eq!(
        created.data.get("status"),
        None,
        "status written through the main resource is dropped"
    );

    let status = json!({
        "apiVersion": "e2e.weir.dev/v1",
        "kind": "Widget",
        "status": { "ready": 2, "phase": "Running" },
    });
    widgets
        .patch_status("w", &PatchParams::apply("weir-e2e"), &Patch::Apply(&status))
        .await?;
    let read = widgets.get_status("w").await?;
    assert_eq!(
        read.data["status"],
        json!({ "ready": 2, "phase": "Running" })
    );
    assert_eq!(read.metadata.generation, created.metadata.generation);
    let phase = plane
        .kubectl([
            "get",
            "widget",
            "w",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.phase}",
        ])
        .await?;
    assert_eq!(phase, "Running");
    Ok(())
}

/// A Service gets a cluster IP; EndpointSlices labelled with its name reach a kube watcher as
/// they are created, changed and deleted.
#[tokio::test]
async fn service_endpointslices_watch() -> TestResult {
    let plane = ControlPlane::shared();
    let ns = plane.namespace("slices").await?;
    let client = plane.client();
    let pp = PostParams::default();

    let service: Service = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
    }))?;
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .create(&pp, &service)
        .await?;
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    assert!(
        cluster_ip.starts_with("10.96."),
        "cluster IP {cluster_ip:?}"
    );

    let slices = Api::<EndpointSlice>::namespaced(client, &ns);
    let config = watcher::Config::default().labels("kubernetes.io/service-name=web");
    let mut events = std::pin::pin!(watcher(slices.clone(), config));
    let mut next = async || -> Result<watcher::Event<EndpointSlice>, Box<dyn std::error::Error>> {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next()).await?;
        Ok(event.ok_or("the watch ended")??)
    };
    // The initial list, empty.
    assert!(matches!(next().await?, watcher::Event::Init));
    assert!(matches!(next().await?, watcher::Event::InitDone));

    let slice = |name: &str, ips: &[&str], ready: bool| -> serde_json::Result<EndpointSlice> {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/service-name": "web",
                    "endpointslice.kubernetes.io/managed-by": "weir-e2e",
                },
            },
            "addressType": "IPv4",
            "endpoints": ips.iter().map(|ip| json!({
                "addresses": [ip],
                "conditions": { "ready": ready, "serving": ready, "terminating": false },
            })).collect::<Vec<_>>(),
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        }))
    };
    slices
        .create(&pp, &slice("web-a", &["10.1.0.1", "10.1.0.2"], true)?)
        .await?;
    slices
        .create(&pp, &slice("web-b", &["10.1.0.3"], false)?)
        .await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match next().await? {
            watcher::Event::Apply(s) => seen.push((s.name_any(), endpoints(&s).len())),
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, [("web-a".to_owned(), 2), ("web-b".to_owned(), 1)]);

    slices
        .replace("web-b", &pp, &{
            let mut s = slices.get("web-b").await?;
            let endpoint = s.endpoints.as_mut().and_then(|e| e.first_mut());
            endpoint.ok_or("no endpoint")?.conditions =
                Some(serde_json::from_value(json!({ "ready": true }))?);
            s
        })
        .await?;
    match next().await? {
        watcher::Event::Apply(s) => {
            assert_eq!(s.name_any(), "web-b");
            let conditions = endpoints(&s).first().and_then(|e| e.conditions.as_ref());
            assert_eq!(conditions.and_then(|c| c.ready), Some(true));
        }
        other => panic!("unexpected {other:?}"),
    }

    slices.delete("web-a", &DeleteParams::default()).await?;
    match next().await? {
        watcher::Event::Delete(s) => assert_eq!(s.name_any(), "web-a"),
        other => panic!("unexpected {other:?}"),
    }
    Ok(())
}

/// A token from the TokenRequest API, bound to a pod and an audience as a projected
/// service-account token is, passes TokenReview for that audience only and names the service
/// account and the pod.
#[tokio::test]
async fn token_review_of_projected_token() -> TestResult {
    const AUDIENCE: &str = "weir-controller";
    let plane = ControlPlane::shared();
    let ns = plane.namespace("tokens").await?;
    let client = plane.client();
    let pp = PostParams::default();

    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    accounts
        .create(
            &pp,
            &serde_json::from_value(json!({ "metadata": { "name": "dataplane" } }))?,
        )
        .await?;
    // No node runs it: the pod exists only to bind the token to.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "dataplane-0" },
        "spec": {
            "serviceAccountName": "dataplane",
            "containers": [{ "name": "dataplane", "image": "weir-dataplane:test" }],
        },
    }))?;
    let pod = pods.create(&pp, &pod).await?;

    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {
            "audiences": [AUDIENCE],
            "expirationSeconds": 600,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name_any(),
                "uid": pod.uid(),
            },
        },
    }))?;
    let token = accounts
        .create_token_request("dataplane", &pp, &request)
        .await?
        .status
        .and_then(|s| s.token)
        .ok_or("no token in the TokenRequest")?;

    let reviews = Api::<TokenReview>::all(client);
    let review = async |audience: &str| -> Result<_, Box<dyn std::error::Error>> {
        let review: TokenReview = serde_json::from_value(json!({
            "spec": { "token": token, "audiences": [audience] },
        }))?;
        let status = reviews.create(&pp, &review).await?.status;
        Ok(status.ok_or("no status in the TokenReview")?)
    };

    let status = review(AUDIENCE).await?;
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    assert_eq!(status.audiences, Some(vec![AUDIENCE.to_owned()]));
    let user = status.user.ok_or("no user")?;
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{ns}:dataplane").as_str())
    );
    let pod_name = user
        .extra
        .as_ref()
        .and_then(|extra| extra.get("authentication.kubernetes.io/pod-name"));
    assert_eq!(pod_name, Some(&vec!["dataplane-0".to_owned()]));

    let other = review("someone-else").await?;
    assert_ne!(other.authenticated, Some(true), "{other:?}");
    // Deleting the pod invalidates the token too, but kube-apiserver caches a successful
    // review for 10 s: too slow to wait for here.
    Ok(())
}

/// The machine's `kubectl` and the built `helm` both use the kubeconfig, as the admin.
#[tokio::test]
async fn kubectl_and_helm_use_the_kubeconfig() -> TestResult {
    let plane = ControlPlane::shared();
    let version: serde_json::Value =
        serde_json::from_str(&plane.kubectl(["get", "--raw", "/version"]).await?)?;
    assert!(
        version["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.")),
        "{version}"
    );
    let whoami = plane
        .kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"])
        .await?;
    assert!(whoami.contains("system:masters"), "{whoami}");
    let releases = plane.helm(["list", "--all-namespaces", "--short"]).await?;
    assert_eq!(releases.trim(), "");
    Ok(())
}

/// A control plane of its own starts, and when dropped leaves no process and no folder.
#[test]
fn own_control_plane_is_cleaned_up_when_dropped() -> TestResult {
    let plane = ControlPlane::start()?;
    let folder = plane
        .kubeconfig_path()
        .parent()
        .ok_or("no folder")?
        .to_owned();
    let address = plane.server().trim_start_matches("https://").to_owned();
    TcpStream::connect(&address)?;
    drop(plane);
    assert!(!folder.exists(), "{} is left", folder.display());
    assert!(
        TcpStream::connect(&address).is_err(),
        "{address} still answers"
    );
    Ok(())
}

fn endpoints(slice: &EndpointSlice) -> &[Endpoint] {
    slice.endpoints.as_deref().unwrap_or_default()
}
