//! How Weir is installed, as specifications: the plain manifests in `deploy/` (rendered with
//! `kubectl kustomize`), the Helm chart in `charts/weir` (rendered with `helm template`), its
//! sidecar example and the container build in `deploy/Dockerfile`.
//!
//! The first tests read the rendered objects: every pod meets the restricted Pod Security
//! profile, RBAC is least privilege, the data planes and the controller agree on how they find
//! and trust each other, the NetworkPolicies keep the admin ports private. The last ones use
//! the shared real control plane: server-side dry runs of everything, and a `helm install` and
//! `helm uninstall`. There are no nodes, so nothing runs the pods; the Dockerfile is checked
//! statically because no image is built here.
//!
//! Needs `kubectl`, the `helm` of `scripts/control-plane`, and, for the flags test, Weir's
//! binaries built next to the test executable (`cargo test --workspace` builds them).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;
use weir_e2e::ControlPlane;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Error = Box<dyn std::error::Error>;

/// The audience of the data planes' channel tokens.
const AUDIENCE: &str = "weir-channel";
/// The controller's channel port, and the admin ports that must stay private.
const CHANNEL_PORT: u64 = 8081;
const DATAPLANE_ADMIN_PORT: u64 = 9901;
const CONTROLLER_METRICS_PORT: u64 = 9902;
const PROXY_PORT: u64 = 8080;
/// Verbs that only read; every other verb writes.
const READ_VERBS: [&str; 3] = ["get", "list", "watch"];

/// Chart values that turn every optional part on, for the renders that check them too.
const EVERYTHING_ON: &str = r#"
channel:
  extraAllowedServiceAccounts: ["shop:checkout"]
controller:
  extraArgs: ["--namespace=shop"]
  nodeSelector: { kubernetes.io/os: linux }
  tolerations: [{ key: dedicated, operator: Equal, value: weir, effect: NoSchedule }]
dataplane:
  poolSelector: tier=edge
  extraArgs: ["--trusted-hops=1"]
  service: { type: LoadBalancer, externalTrafficPolicy: Local, annotations: { example.com/lb: internal } }
  autoscaling: { enabled: true, minReplicas: 3, maxReplicas: 12 }
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector: { matchLabels: { app.kubernetes.io/component: dataplane } }
networkPolicy:
  extraChannelPeers:
    - namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: shop } }
      podSelector: { matchLabels: { weir.dev/dataplane: checkout } }
  metricsPeers:
    - namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: monitoring } }
serviceMonitor: { enabled: true, labels: { release: prometheus } }
"#;

// ---------------------------------------------------------------------------------------------
// The rendered objects
// ---------------------------------------------------------------------------------------------

/// The pod security of every workload, in the manifests, the chart (default and with every
/// option on) and the sidecar example: the restricted profile at pod and container level, a
/// read-only root filesystem, resource requests and a memory limit, readiness and liveness
/// probes.
#[test]
fn every_pod_meets_the_restricted_profile_and_has_requests_limits_and_probes() -> TestResult {
    for install in installs()?.iter().chain([sidecar_example()?]) {
        let mut workloads = 0;
        let mut problems = Vec::new();
        for object in &install.objects {
            if let Some(pod) = pod_spec(object) {
                workloads += 1;
                problems.extend(
                    pod_problems(pod)
                        .into_iter()
                        .map(|p| format!("{} {}: {p}", kind(object), name(object))),
                );
            }
        }
        assert!(workloads >= 1, "{}: no workload", install.name);
        assert!(
            problems.is_empty(),
            "{}:\n  {}",
            install.name,
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// RBAC is least privilege: no `*` anywhere, nothing on Secrets, and the ClusterRole grants
/// exactly reads of pools, Services and EndpointSlices and writes of pool status, Events and
/// TokenReviews, nothing more.
#[test]
fn rbac_has_no_wildcard_no_secrets_and_writes_cluster_wide_only_status_events_and_token_reviews()
-> TestResult {
    let expected: BTreeSet<Grant> = [
        ("weir.dev", "loadbalancerpools", "get"),
        ("weir.dev", "loadbalancerpools", "list"),
        ("weir.dev", "loadbalancerpools", "watch"),
        ("weir.dev", "loadbalancerpools/status", "patch"),
        ("weir.dev", "loadbalancerpools/status", "update"),
        ("", "services", "get"),
        ("", "services", "list"),
        ("", "services", "watch"),
        ("discovery.k8s.io", "endpointslices", "get"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("", "events", "create"),
        ("", "events", "patch"),
        ("authentication.k8s.io", "tokenreviews", "create"),
    ]
    .into_iter()
    .map(Grant::from)
    .collect();

    for install in installs()? {
        let roles = install.of_kinds(&["ClusterRole", "Role"]);
        assert!(!roles.is_empty(), "{}: no RBAC", install.name);
        for role in &roles {
            let what = format!("{}: {} {}", install.name, kind(role), name(role));
            assert!(role.get("aggregationRule").is_none(), "{what} aggregates");
            for rule in array(&role["rules"]) {
                assert!(rule.get("nonResourceURLs").is_none(), "{what}: {rule}");
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    assert!(
                        !array(&rule[field]).iter().any(|v| v.as_str() == Some("*")),
                        "{what}: a wildcard in {field}: {rule}"
                    );
                }
                assert!(
                    !array(&rule["resources"])
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|r| r == "secrets" || r.starts_with("secrets/")),
                    "{what} grants secrets: {rule}"
                );
            }
        }
        let cluster_roles = install.of_kinds(&["ClusterRole"]);
        assert_eq!(cluster_roles.len(), 1, "{}: one ClusterRole", install.name);
        let granted = grants(cluster_roles[0]);
        let writes: Vec<_> = granted
            .iter()
            .filter(|g| !READ_VERBS.contains(&g.verb.as_str()))
            .collect();
        assert!(
            writes.iter().all(|g| expected.contains(g)),
            "{}: cluster-wide writes {writes:?}",
            install.name
        );
        assert_eq!(granted, expected, "{}: the ClusterRole", install.name);
    }
    Ok(())
}

/// Leader election needs Leases, and gets them only from a Role in the install namespace,
/// bound to the controller's ServiceAccount there.
#[test]
fn leases_are_granted_only_by_a_role_in_the_install_namespace() -> TestResult {
    let expected: BTreeSet<Grant> = ["get", "create", "update"]
        .into_iter()
        .map(|verb| Grant::from(("coordination.k8s.io", "leases", verb)))
        .collect();
    for install in installs()? {
        for role in install.of_kinds(&["ClusterRole"]) {
            assert!(
                !grants(role)
                    .iter()
                    .any(|g| g.resource.starts_with("leases")),
                "{}: leases cluster-wide",
                install.name
            );
        }
        let roles = install.of_kinds(&["Role"]);
        assert_eq!(roles.len(), 1, "{}: one Role", install.name);
        let role = roles[0];
        assert_eq!(namespace(role), install.namespace, "{}", install.name);
        assert_eq!(grants(role), expected, "{}: the Role", install.name);

        let controller = install.service_account("controller");
        let bindings = install.of_kinds(&["RoleBinding"]);
        assert_eq!(bindings.len(), 1, "{}: one RoleBinding", install.name);
        assert_eq!(namespace(bindings[0]), install.namespace);
        assert_eq!(bindings[0]["roleRef"]["kind"], "Role");
        assert_eq!(bindings[0]["roleRef"]["name"], name(role));
        assert_eq!(
            subjects(bindings[0]),
            [(install.namespace.clone(), controller.clone())]
        );
        let cluster_bindings = install.of_kinds(&["ClusterRoleBinding"]);
        assert_eq!(cluster_bindings.len(), 1, "{}", install.name);
        assert_eq!(
            subjects(cluster_bindings[0]),
            [(install.namespace.clone(), controller)]
        );
    }
    Ok(())
}

/// The data plane has no RBAC and no API token: its ServiceAccount is bound to nothing, the pod
/// does not mount the API token, and the only credential it has is a projected token for the
/// channel's audience, at the path `--token-file` names.
#[test]
fn the_data_plane_has_no_rbac_and_only_a_projected_channel_token() -> TestResult {
    for install in installs()? {
        let account = install.service_account("dataplane");
        for binding in install.of_kinds(&["RoleBinding", "ClusterRoleBinding"]) {
            assert!(
                !subjects(binding)
                    .iter()
                    .any(|(_, subject)| subject == &account),
                "{}: {} binds the data plane",
                install.name,
                name(binding)
            );
        }
        let pod = install.pod("dataplane");
        assert_eq!(
            pod["automountServiceAccountToken"], false,
            "{}",
            install.name
        );
        let container = &pod["containers"][0];
        let token_file = flag(container, "--token-file").ok_or("no --token-file")?;
        let (volume, path) = mounted_volume(pod, container, &token_file)
            .ok_or_else(|| format!("{}: {token_file} is not on a volume", install.name))?;
        let sources = array(&volume["projected"]["sources"]);
        assert_eq!(sources.len(), 1, "{}: {volume}", install.name);
        let token = &sources[0]["serviceAccountToken"];
        assert_eq!(token["path"], path, "{}", install.name);
        assert_eq!(token["audience"], AUDIENCE, "{}", install.name);
        assert!(
            token["expirationSeconds"]
                .as_u64()
                .is_some_and(|s| s <= 3600),
            "{}: short-lived: {token}",
            install.name
        );
        let controller = &install.pod("controller")["containers"][0];
        assert_eq!(
            flag(controller, "--token-audience").as_deref(),
            Some(AUDIENCE)
        );
    }
    Ok(())
}

/// The data planes reach the controller by its Service's cluster DNS name on the channel port,
/// the Service exposes only that port, and the controller accepts the data planes'
/// ServiceAccount and no other by default.
#[test]
fn data_planes_find_the_controller_service_and_the_controller_trusts_their_service_account()
-> TestResult {
    for install in installs()? {
        let service = install
            .objects
            .iter()
            .find(|o| kind(o) == "Service" && component(o) == Some("controller"))
            .ok_or("no controller Service")?;
        let ports = array(&service["spec"]["ports"]);
        assert_eq!(ports.len(), 1, "{}: {ports:?}", install.name);
        assert_eq!(ports[0]["port"], CHANNEL_PORT);
        assert_eq!(ports[0]["targetPort"], "channel");
        assert!(selects(
            &service["spec"]["selector"],
            &install.pod_labels("controller")
        ));

        let dataplane = &install.pod("dataplane")["containers"][0];
        assert_eq!(
            flag(dataplane, "--controller"),
            Some(format!(
                "http://{}.{}.svc:{CHANNEL_PORT}",
                name(service),
                install.namespace
            )),
            "{}",
            install.name
        );
        let controller = &install.pod("controller")["containers"][0];
        let channel = named_port(controller, "channel");
        assert_eq!(channel, Some(CHANNEL_PORT), "{}", install.name);
        let allowed = flags(controller, "--allowed-service-account");
        assert_eq!(
            allowed.first(),
            Some(&format!(
                "{}:{}",
                install.namespace,
                install.service_account("dataplane")
            )),
            "{}",
            install.name
        );
        let extra = if install.everything_on { 1 } else { 0 };
        assert_eq!(allowed.len(), 1 + extra, "{}: {allowed:?}", install.name);
    }
    Ok(())
}

/// Leader election: the controller's replicas (two) hold the Lease in their own namespace,
/// under their pod name, and advertise their channel at their pod IP, all from the downward
/// API.
#[test]
fn controller_replicas_elect_a_leader_in_their_namespace_by_pod_name_and_pod_ip() -> TestResult {
    for install in installs()? {
        let deployment = install.deployment("controller");
        assert_eq!(deployment["spec"]["replicas"], 2, "{}", install.name);
        let container = &install.pod("controller")["containers"][0];
        let channel = named_port(container, "channel").ok_or("no channel port")?;
        for (flag_name, value, var, field) in [
            (
                "--lease-namespace",
                "$(POD_NAMESPACE)".to_owned(),
                "POD_NAMESPACE",
                "metadata.namespace",
            ),
            (
                "--identity",
                "$(POD_NAME)".to_owned(),
                "POD_NAME",
                "metadata.name",
            ),
            (
                "--advertise-url",
                format!("http://$(POD_IP):{channel}"),
                "POD_IP",
                "status.podIP",
            ),
        ] {
            assert_eq!(
                flag(container, flag_name),
                Some(value),
                "{}: {flag_name}",
                install.name
            );
            let from = array(&container["env"])
                .iter()
                .find(|e| e["name"] == var)
                .map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]);
            assert_eq!(from, Some(&Value::from(field)), "{}: {var}", install.name);
        }
    }
    Ok(())
}

/// The NetworkPolicies: only data-plane pods (and the controller's replicas, which relay
/// reports to the Lease holder) reach the channel, no pod reaches the admin ports
/// (9901, 9902) unless a metrics peer is named explicitly, and anyone reaches the proxy port.
#[test]
fn network_policies_let_only_weir_pods_reach_the_channel_and_keep_admin_ports_private() -> TestResult
{
    for install in installs()? {
        let dataplane = install.pod_labels("dataplane");
        // Controller replicas relay data planes' reports to the Lease holder's channel.
        let controller = install.pod_labels("controller");
        let admitted = |component: &str, port: u64| -> Vec<Option<Vec<Value>>> {
            let pod = install.pod(component);
            let labels = install.pod_labels(component);
            let policies: Vec<_> = install
                .of_kinds(&["NetworkPolicy"])
                .into_iter()
                .filter(|p| namespace(p) == install.namespace)
                .filter(|p| selects(&p["spec"]["podSelector"]["matchLabels"], &labels))
                .collect();
            assert!(
                policies.iter().any(|p| array(&p["spec"]["policyTypes"])
                    .iter()
                    .any(|t| t == "Ingress")),
                "{}: no ingress policy selects the {component} pods",
                install.name
            );
            let container = &pod["containers"][0];
            policies
                .iter()
                .flat_map(|p| array(&p["spec"]["ingress"]))
                .filter(|rule| rule_admits_port(rule, container, port))
                .map(|rule| rule.get("from").map(|from| array(from).to_vec()))
                .collect()
        };

        let channel = admitted("controller", CHANNEL_PORT);
        assert!(
            !channel.is_empty(),
            "{}: the channel is closed",
            install.name
        );
        for from in &channel {
            let peers = from
                .as_ref()
                .ok_or_else(|| format!("{}: the channel is open to every pod", install.name))?;
            for peer in peers {
                let ours = peer.get("namespaceSelector").is_none()
                    && peer.get("ipBlock").is_none()
                    && (selects(&peer["podSelector"]["matchLabels"], &dataplane)
                        || selects(&peer["podSelector"]["matchLabels"], &controller));
                let sidecars = install.everything_on
                    && peer["namespaceSelector"].is_object()
                    && peer["podSelector"].is_object();
                assert!(
                    ours || sidecars,
                    "{}: the channel admits {peer}",
                    install.name
                );
            }
        }

        for (component, port) in [
            ("controller", CONTROLLER_METRICS_PORT),
            ("dataplane", DATAPLANE_ADMIN_PORT),
        ] {
            for from in admitted(component, port) {
                let explicit = install.everything_on
                    && from.as_ref().is_some_and(|peers| {
                        !peers.is_empty()
                            && peers.iter().all(|p| p["namespaceSelector"].is_object())
                    });
                assert!(
                    explicit,
                    "{}: {component} admin port {port} admits {}",
                    install.name,
                    from.map_or_else(|| "every source".to_owned(), |p| Value::from(p).to_string())
                );
            }
        }

        let proxy = admitted("dataplane", PROXY_PORT);
        assert!(
            proxy.iter().any(Option::is_none),
            "{}: the proxy port must take traffic from anyone: {proxy:?}",
            install.name
        );
    }
    Ok(())
}

/// Every flag the manifests, the chart and the sidecar example pass to `weir-controller` and
/// `weir-dataplane` is one their `--help` lists, and every `$(VAR)` in an argument is an
/// environment variable of the container (else Kubernetes passes it literally).
#[test]
fn every_flag_the_manifests_pass_is_one_the_binaries_accept() -> TestResult {
    let mut known: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for program in ["weir-controller", "weir-dataplane"] {
        let help = run(&weir_e2e::weir::binary(program), ["--help"], None, &[])?;
        known.insert(program, long_flags(&help));
    }
    let mut problems = Vec::new();
    let mut checked = 0;
    for install in installs()?.iter().chain([sidecar_example()?]) {
        for container in install.containers() {
            let command = array(&container["command"]);
            let Some(program) = command.first().and_then(Value::as_str) else {
                continue;
            };
            let Some(flags) = known
                .iter()
                .find(|(p, _)| program.ends_with(&format!("/{p}")))
                .map(|(_, f)| f)
            else {
                continue;
            };
            checked += 1;
            let env: BTreeSet<&str> = array(&container["env"])
                .iter()
                .filter_map(|e| e["name"].as_str())
                .collect();
            for arg in array(&container["args"]).iter().filter_map(Value::as_str) {
                let flag = arg.split('=').next().unwrap_or(arg);
                if arg.starts_with("--") && !flags.contains(flag) {
                    problems.push(format!("{}: {program} has no {flag}", install.name));
                }
                for var in references(arg) {
                    if !env.contains(var) {
                        problems.push(format!("{}: {arg}: no env {var}", install.name));
                    }
                }
            }
        }
    }
    assert!(checked >= 7, "only {checked} Weir containers found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

/// The CRD is generated once, in `crds/`; the copies in `deploy/` (kustomize does not read
/// files outside its folder) and in the chart's `crds/` are the same bytes.
#[test]
fn the_crd_copies_in_deploy_and_the_chart_are_identical_to_crds() -> TestResult {
    let generated = std::fs::read(repo().join("crds/loadbalancerpool.yaml"))?;
    for copy in [
        "deploy/crds/loadbalancerpool.yaml",
        "charts/weir/crds/loadbalancerpool.yaml",
    ] {
        let text = std::fs::read(repo().join(copy))?;
        assert!(
            text == generated,
            "{copy} differs from crds/loadbalancerpool.yaml: copy it again with \
             `cp crds/loadbalancerpool.yaml {copy}`"
        );
    }
    Ok(())
}

/// `deploy/kustomization.yaml` lists every manifest in `deploy/`, so `kubectl apply -k`
/// leaves nothing out.
#[test]
fn the_kustomization_lists_every_manifest_in_deploy() -> TestResult {
    let deploy = repo().join("deploy");
    let kustomization: Value =
        serde_yaml::from_str(&std::fs::read_to_string(deploy.join("kustomization.yaml"))?)?;
    let listed: BTreeSet<String> = array(&kustomization["resources"])
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let mut present = BTreeSet::new();
    for dir in ["", "crds/"] {
        for entry in std::fs::read_dir(deploy.join(dir))? {
            let file = entry?.file_name().to_string_lossy().into_owned();
            if file.ends_with(".yaml") && file != "kustomization.yaml" {
                present.insert(format!("{dir}{file}"));
            }
        }
    }
    assert_eq!(listed, present);
    Ok(())
}

/// The image tag of the manifests and the chart's appVersion are the workspace's version, so a
/// release bumps them together.
#[test]
fn image_tags_and_the_chart_app_version_are_the_workspace_version() -> TestResult {
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml"))?;
    let version = cargo
        .split("[workspace.package]")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_owned())
        .ok_or("no workspace version")?;
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml"))?)?;
    assert_eq!(chart["appVersion"], version.as_str());
    let image = format!("ghcr.io/weir-lb/weir:{version}");
    for install in installs()?.iter().filter(|i| !i.everything_on) {
        for container in install.containers() {
            assert_eq!(container["image"], image.as_str(), "{}", install.name);
        }
    }
    Ok(())
}

/// `deploy/Dockerfile` (not built here: there is no Docker engine) builds both binaries in a
/// Rust stage and copies them into a distroless final stage, which has no shell, runs no `RUN`,
/// starts in exec form and runs as a numeric non-root user; the paths the manifests run are the
/// ones it copies; the build context leaves `target/` out.
#[test]
fn the_dockerfile_builds_both_binaries_and_runs_them_as_a_numeric_non_root_user_without_a_shell()
-> TestResult {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile"))?;
    let stages = dockerfile_stages(&text);
    assert!(stages.len() >= 2, "a multi-stage build: {stages:?}");
    let (build, build_steps) = &stages[0];
    let build_name = build
        .split_whitespace()
        .skip_while(|w| !w.eq_ignore_ascii_case("AS"))
        .nth(1)
        .ok_or("the build stage has no name")?;
    let cargo = build_steps
        .iter()
        .find(|i| i.starts_with("RUN") && i.contains("cargo build"))
        .ok_or("no cargo build")?;
    for part in [
        "--release",
        "--locked",
        "-p weir-controller",
        "-p weir-dataplane",
    ] {
        assert!(cargo.contains(part), "{part} missing from: {cargo}");
    }

    let (base, steps) = stages.last().ok_or("no stage")?;
    assert!(
        base.contains("gcr.io/distroless/") || base.split_whitespace().nth(1) == Some("scratch"),
        "the final stage has a shell: {base}"
    );
    assert!(
        !steps.iter().any(|i| i.starts_with("RUN")),
        "RUN in the final stage"
    );
    let user = steps
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .ok_or("the final stage sets no USER")?;
    let uid = user.trim().split(':').next().unwrap_or_default();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid > 0),
        "USER {user} is not a numeric non-root user"
    );
    for instruction in steps
        .iter()
        .filter(|i| i.starts_with("ENTRYPOINT") || i.starts_with("CMD"))
    {
        assert!(
            instruction
                .split_once(' ')
                .is_some_and(|(_, a)| a.trim().starts_with('[')),
            "shell form needs a shell: {instruction}"
        );
    }
    let copied: BTreeSet<&str> = steps
        .iter()
        .filter(|i| i.starts_with(&format!("COPY --from={build_name} ")))
        .filter_map(|i| i.split_whitespace().last())
        .collect();
    for binary in ["weir-controller", "weir-dataplane"] {
        assert!(
            copied.iter().any(|c| c.ends_with(&format!("/{binary}"))),
            "{binary} is not copied from the build stage: {copied:?}"
        );
    }
    for install in installs()?.iter().chain([sidecar_example()?]) {
        for container in install.containers() {
            let Some(program) = container["command"][0].as_str() else {
                continue;
            };
            if program.contains("weir-") {
                assert!(copied.contains(program), "{}: {program}", install.name);
            }
        }
    }

    let ignore = std::fs::read_to_string(repo().join("deploy/Dockerfile.dockerignore"))?;
    assert!(ignore.lines().any(|l| l.trim() == "target"), "{ignore}");
    Ok(())
}

/// Every value in `values.schema.json` says what it is: the schema documents the values as
/// `values.yaml` does, line by line.
#[test]
fn every_value_in_the_schema_has_a_description() -> TestResult {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(
        chart_dir().join("values.schema.json"),
    )?)?;
    let mut undocumented = Vec::new();
    describe(&schema, "", &mut undocumented);
    assert!(undocumented.is_empty(), "no description: {undocumented:?}");
    assert_eq!(schema["additionalProperties"], false);
    Ok(())
}

/// A values file of [`EVERYTHING_ON`] without the ServiceMonitor, whose CRD this control plane
/// does not have; it lives as long as the returned folder.
fn everything_on_but_service_monitor() -> Result<(tempfile::TempDir, PathBuf), Error> {
    let dir = tempfile::tempdir()?;
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        format!("{EVERYTHING_ON}\nserviceMonitor: {{ enabled: false }}\n"),
    )?;
    Ok((dir, values))
}

// ---------------------------------------------------------------------------------------------
// Helm's own checks
// ---------------------------------------------------------------------------------------------

/// `helm lint --strict` passes, with the default values and with every option on.
#[test]
fn helm_lint_passes() -> TestResult {
    // ServiceMonitor needs the Prometheus Operator's CRD, which `helm lint` cannot be told of.
    let (_dir, values) = everything_on_but_service_monitor()?;
    helm(["lint", "--strict", &chart()])?;
    helm(["lint", "--strict", &chart(), "-f", &path_str(&values)])?;
    Ok(())
}

/// A value that breaks `values.schema.json` fails `helm lint` with the field's path.
#[test]
fn helm_lint_names_the_field_a_values_override_gets_wrong() -> TestResult {
    for (set, field) in [
        ("dataplane.service.type=Public", "/dataplane/service/type"),
        ("controller.replicas=0", "/controller/replicas"),
        (
            "dataplane.autoscaling.maxReplicas=many",
            "/dataplane/autoscaling/maxReplicas",
        ),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        (
            "channel.extraAllowedServiceAccounts={checkout}",
            "/channel/extraAllowedServiceAccounts/0",
        ),
        ("dataplane.extraArgs={-v}", "/dataplane/extraArgs/0"),
        ("replicas=3", "'replicas'"),
    ] {
        let error = helm(["lint", &chart(), "--set", set])
            .expect_err(&format!("--set {set} must fail"))
            .to_string();
        assert!(error.contains(field), "--set {set}: {error}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Against the real control plane
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One way of installing Weir, rendered into objects.
struct Install {
    name: String,
    /// The namespace Weir's namespaced objects are in.
    namespace: String,
    objects: Vec<Value>,
    /// Rendered with [`EVERYTHING_ON`].
    everything_on: bool,
}

/// One RBAC permission: API group, resource, verb.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    group: String,
    resource: String,
    verb: String,
}

impl From<(&str, &str, &str)> for Grant {
    fn from((group, resource, verb): (&str, &str, &str)) -> Self {
        Self {
            group: group.to_owned(),
            resource: resource.to_owned(),
            verb: verb.to_owned(),
        }
    }
}

impl Install {
    fn of_kinds(&self, kinds: &[&str]) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| kinds.contains(&kind(o)))
            .collect()
    }

    fn deployment(&self, component: &str) -> &Value {
        let found: Vec<_> = self
            .objects
            .iter()
            .filter(|o| kind(o) == "Deployment" && self::component(o) == Some(component))
            .collect();
        assert_eq!(found.len(), 1, "{}: one {component} Deployment", self.name);
        found[0]
    }

    fn pod(&self, component: &str) -> &Value {
        &self.deployment(component)["spec"]["template"]["spec"]
    }

    fn pod_labels(&self, component: &str) -> Value {
        self.deployment(component)["spec"]["template"]["metadata"]["labels"].clone()
    }

    fn service_account(&self, component: &str) -> String {
        let account = self.pod(component)["serviceAccountName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            self.objects
                .iter()
                .any(|o| kind(o) == "ServiceAccount" && name(o) == account),
            "{}: no ServiceAccount {account}",
            self.name
        );
        account
    }

    /// Every container and init container of every workload.
    fn containers(&self) -> Vec<&Value> {
        self.objects
            .iter()
            .filter_map(pod_spec)
            .flat_map(|pod| {
                array(&pod["containers"])
                    .iter()
                    .chain(array(&pod["initContainers"]))
            })
            .collect()
    }
}

/// The ways of installing Weir, each rendered once per test binary.
fn installs() -> Result<&'static [Install], Error> {
    static INSTALLS: OnceLock<Result<Vec<Install>, String>> = OnceLock::new();
    let installs = INSTALLS.get_or_init(|| render_installs().map_err(|e| e.to_string()));
    Ok(installs.as_ref().map_err(|e| e.clone())?)
}

fn render_installs() -> Result<Vec<Install>, Error> {
    let deploy = run(
        &weir_e2e::binaries::kubectl()?,
        ["kustomize", &path_str(&repo().join("deploy"))],
        None,
        &[],
    )?;
    let defaults = helm(["template", "weir", &chart(), "--namespace", "weir-system"])?;
    let dir = tempfile::tempdir()?;
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, EVERYTHING_ON)?;
    // Another release name and namespace, so that names derived from them are checked too.
    let everything = helm([
        "template",
        "edge",
        &chart(),
        "--namespace",
        "gateways",
        "-f",
        &path_str(&values),
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
    ])?;
    let install = |name: &str, namespace: &str, text: &str, everything_on| {
        Ok::<_, Error>(Install {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            objects: documents(text)?,
            everything_on,
        })
    };
    let installs = vec![
        install("deploy/", "weir-system", &deploy, false)?,
        install("chart (defaults)", "weir-system", &defaults, false)?,
        install("chart (everything on)", "gateways", &everything, true)?,
    ];
    let on = &installs[2];
    for kind in ["HorizontalPodAutoscaler", "ServiceMonitor"] {
        assert_eq!(on.of_kinds(&[kind]).len(), 1, "{}: {kind}", on.name);
    }
    assert!(
        on.deployment("dataplane")["spec"].get("replicas").is_none(),
        "the HPA owns the data planes' replica count"
    );
    Ok(installs)
}

/// The chart's sidecar example, as an install of its own.
fn sidecar_example() -> Result<&'static Install, Error> {
    static EXAMPLE: OnceLock<Result<Install, String>> = OnceLock::new();
    let example = EXAMPLE.get_or_init(|| {
        let text = std::fs::read_to_string(chart_dir().join("examples/sidecar.yaml"))
            .map_err(|e| e.to_string())?;
        Ok(Install {
            name: "examples/sidecar.yaml".to_owned(),
            namespace: String::new(),
            objects: documents(&text).map_err(|e| e.to_string())?,
            everything_on: false,
        })
    });
    Ok(example.as_ref().map_err(|e| e.clone())?)
}

/// What in a pod breaks the restricted profile or Weir's own rules, one line each.
fn pod_problems(pod: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut require = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    let context = &pod["securityContext"];
    require(
        context["runAsNonRoot"] == true,
        "pod securityContext.runAsNonRoot is not true".into(),
    );
    require(
        context["runAsUser"].as_u64().is_some_and(|u| u > 0),
        format!(
            "pod securityContext.runAsUser {} is not a non-root uid",
            context["runAsUser"]
        ),
    );
    require(
        context["seccompProfile"]["type"] == "RuntimeDefault",
        "pod seccompProfile is not RuntimeDefault".into(),
    );
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        require(pod[host] != true, format!("{host} is true"));
    }
    for volume in array(&pod["volumes"]) {
        require(
            volume.get("hostPath").is_none(),
            format!("hostPath volume {}", volume["name"]),
        );
    }

    let long_running = array(&pod["containers"]).iter().chain(
        array(&pod["initContainers"])
            .iter()
            .filter(|c| c["restartPolicy"] == "Always"),
    );
    for container in array(&pod["containers"])
        .iter()
        .chain(array(&pod["initContainers"]))
    {
        let c = container["name"].as_str().unwrap_or("?");
        let context = &container["securityContext"];
        require(
            context["allowPrivilegeEscalation"] == false,
            format!("{c}: allowPrivilegeEscalation is not false"),
        );
        require(
            array(&context["capabilities"]["drop"])
                .iter()
                .any(|d| d == "ALL"),
            format!("{c}: capabilities do not drop ALL"),
        );
        require(
            array(&context["capabilities"]["add"]).is_empty(),
            format!("{c}: capabilities added"),
        );
        require(context["privileged"] != true, format!("{c}: privileged"));
        require(
            context["readOnlyRootFilesystem"] == true,
            format!("{c}: readOnlyRootFilesystem is not true"),
        );
        require(
            context["runAsNonRoot"] == true,
            format!("{c}: runAsNonRoot is not true"),
        );
        require(
            context
                .get("runAsUser")
                .is_none_or(|u| u.as_u64().is_some_and(|u| u > 0)),
            format!(
                "{c}: runAsUser {} is not a non-root uid",
                context["runAsUser"]
            ),
        );
        require(
            context["seccompProfile"]["type"] == "RuntimeDefault",
            format!("{c}: seccompProfile is not RuntimeDefault"),
        );
        let resources = &container["resources"];
        for (field, what) in [
            ("/requests/cpu", "a CPU request"),
            ("/requests/memory", "a memory request"),
            ("/limits/memory", "a memory limit"),
        ] {
            require(
                resources.pointer(field).is_some(),
                format!("{c}: no {what}"),
            );
        }
        for port in array(&container["ports"]) {
            require(port.get("hostPort").is_none(), format!("{c}: hostPort"));
        }
    }
    for container in long_running {
        let c = container["name"].as_str().unwrap_or("?");
        for probe in ["readinessProbe", "livenessProbe"] {
            require(container[probe].is_object(), format!("{c}: no {probe}"));
        }
    }
    problems
}

/// Every (group, resource, verb) a role grants.
fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for rule in array(&role["rules"]) {
        for group in array(&rule["apiGroups"]) {
            for resource in array(&rule["resources"]) {
                for verb in array(&rule["verbs"]) {
                    grants.insert(Grant::from((
                        group.as_str().unwrap_or_default(),
                        resource.as_str().unwrap_or_default(),
                        verb.as_str().unwrap_or_default(),
                    )));
                }
            }
        }
    }
    grants
}

/// The ServiceAccounts a binding binds, as (namespace, name).
fn subjects(binding: &Value) -> Vec<(String, String)> {
    array(&binding["subjects"])
        .iter()
        .map(|s| {
            assert_eq!(s["kind"], "ServiceAccount", "{s}");
            let field = |f: &str| s[f].as_str().unwrap_or_default().to_owned();
            (field("namespace"), field("name"))
        })
        .collect()
}

/// Whether `labels` has every pair of `match_labels` (an empty selector selects everything).
fn selects(match_labels: &Value, labels: &Value) -> bool {
    match_labels
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| &labels[k] == v))
}

/// Whether an ingress rule's ports take `port` of `container` (no `ports`: every port).
fn rule_admits_port(rule: &Value, container: &Value, port: u64) -> bool {
    let Some(ports) = rule.get("ports") else {
        return true;
    };
    array(ports).iter().any(|p| match &p["port"] {
        Value::Number(n) => n.as_u64() == Some(port),
        Value::String(named) => named_port(container, named) == Some(port),
        _ => true,
    })
}

/// The number of a container's named port.
fn named_port(container: &Value, port: &str) -> Option<u64> {
    array(&container["ports"])
        .iter()
        .find(|p| p["name"] == port)
        .and_then(|p| p["containerPort"].as_u64())
}

/// Every value of `--name=value` among a container's arguments.
fn flags(container: &Value, name: &str) -> Vec<String> {
    let prefix = format!("{name}=");
    array(&container["args"])
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

fn flag(container: &Value, name: &str) -> Option<String> {
    flags(container, name).into_iter().next()
}

/// The volume `file` is on, and the file's path inside it.
fn mounted_volume<'a>(
    pod: &'a Value,
    container: &Value,
    file: &str,
) -> Option<(&'a Value, String)> {
    array(&container["volumeMounts"]).iter().find_map(|mount| {
        let dir = mount["mountPath"].as_str()?;
        let path = file.strip_prefix(dir)?.strip_prefix('/')?;
        let volume = array(&pod["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])?;
        Some((volume, path.to_owned()))
    })
}

/// The `$(VAR)` references Kubernetes expands in an argument.
fn references(arg: &str) -> Vec<&str> {
    arg.split("$(")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(var, _)| var))
        .collect()
}

/// The long flags a `--help` lists.
fn long_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|line| {
            line.trim_start()
                .split([',', ' '])
                .map(str::trim)
                .find(|w| w.starts_with("--"))
                .map(str::to_owned)
        })
        .collect()
}

/// The stages of a Dockerfile: each `FROM` line with the instructions after it, continuation
/// lines joined and comments dropped.
fn dockerfile_stages(text: &str) -> Vec<(String, Vec<String>)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for instruction in instructions {
        if instruction.starts_with("FROM ") {
            stages.push((instruction, Vec::new()));
        } else if let Some((_, steps)) = stages.last_mut() {
            steps.push(instruction);
        }
    }
    stages
}

/// Gathers the paths of schema properties without a description.
fn describe(schema: &Value, at: &str, undocumented: &mut Vec<String>) {
    if let Some(properties) = schema["properties"].as_object() {
        for (key, property) in properties {
            let path = format!("{at}.{key}");
            if property["description"].as_str().is_none_or(str::is_empty) {
                undocumented.push(path.clone());
            }
            describe(property, &path, undocumented);
        }
    }
    if schema["items"].is_object() {
        describe(&schema["items"], &format!("{at}[]"), undocumented);
    }
}

fn pod_spec(object: &Value) -> Option<&Value> {
    match kind(object) {
        "Pod" => object.get("spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            object.pointer("/spec/template/spec")
        }
        "CronJob" => object.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

fn namespace(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or_default()
}

fn component(object: &Value) -> Option<&str> {
    object["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// The objects of a multi-document YAML stream, empty documents left out.
fn documents(text: &str) -> Result<Vec<Value>, Error> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

fn chart_dir() -> PathBuf {
    repo().join("charts/weir")
}

fn chart() -> String {
    path_str(&chart_dir())
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Runs `helm` with no cluster (lint, template); returns stdout.
fn helm<I, S>(args: I) -> Result<String, Error>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    // A kubeconfig that does not exist: nothing here may reach a cluster by accident.
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("no-kubeconfig");
    run(
        &weir_e2e::binaries::helm()?,
        args,
        None,
        &[("KUBECONFIG", kubeconfig.as_os_str())],
    )
}

/// Runs `helm` against the control plane; returns stdout.
fn helm_in<I, S>(plane: &ControlPlane, args: I) -> Result<String, Error>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    run(
        &weir_e2e::binaries::helm()?,
        args,
        None,
        &[("KUBECONFIG", plane.kubeconfig_path().as_os_str())],
    )
}

/// Runs `kubectl` against the control plane; returns stdout and stderr (where warnings go).
fn kubectl_in<I, S>(
    plane: &ControlPlane,
    args: I,
    input: Option<&str>,
) -> Result<(String, String), Error>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    args.insert(0, "--kubeconfig".into());
    args.insert(1, plane.kubeconfig_path().into());
    run_full(&weir_e2e::binaries::kubectl()?, args, input, &[])
}

fn run<I, S>(
    program: &Path,
    args: I,
    input: Option<&str>,
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<String, Error>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    Ok(run_full(program, args, input, env)?.0)
}

/// Runs a program to its end, with Helm's folders in a temporary one so that the user's are
/// never touched; returns stdout and stderr, or an error with both.
fn run_full<I, S>(
    program: &Path,
    args: I,
    input: Option<&str>,
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<(String, String), Error>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let line = std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let home = tempfile::tempdir()?;
    let mut command = Command::new(program);
    command
        .args(&args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("running {line}: {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(format!("`{line}` failed ({}):\n{stdout}\n{stderr}", output.status).into());
    }
    Ok((stdout, stderr))
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
