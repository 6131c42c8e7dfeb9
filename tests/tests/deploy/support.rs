//! What the tests share: the ways of installing Weir rendered into objects, readers of those
//! objects, and `helm` and `kubectl` run with no cluster or against the control plane.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;
use weir_e2e::ControlPlane;

use crate::Error;

/// The controller's channel port.
pub const CHANNEL_PORT: u64 = 8081;

/// Chart values that turn every optional part on, for the renders that check them too.
pub const EVERYTHING_ON: &str = r#"
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

/// A values file of [`EVERYTHING_ON`] without the ServiceMonitor, whose CRD this control plane
/// does not have; it lives as long as the returned folder.
pub fn everything_on_but_service_monitor() -> Result<(tempfile::TempDir, PathBuf), Error> {
    let dir = tempfile::tempdir()?;
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        format!("{EVERYTHING_ON}\nserviceMonitor: {{ enabled: false }}\n"),
    )?;
    Ok((dir, values))
}

/// One way of installing Weir, rendered into objects.
pub struct Install {
    /// Which one, in messages.
    pub name: String,
    /// The namespace Weir's namespaced objects are in.
    pub namespace: String,
    /// What it renders to.
    pub objects: Vec<Value>,
    /// Rendered with [`EVERYTHING_ON`].
    pub everything_on: bool,
}

impl Install {
    pub fn of_kinds(&self, kinds: &[&str]) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| kinds.contains(&kind(o)))
            .collect()
    }

    pub fn deployment(&self, component: &str) -> &Value {
        let found: Vec<_> = self
            .objects
            .iter()
            .filter(|o| kind(o) == "Deployment" && self::component(o) == Some(component))
            .collect();
        assert_eq!(found.len(), 1, "{}: one {component} Deployment", self.name);
        found[0]
    }

    pub fn pod(&self, component: &str) -> &Value {
        &self.deployment(component)["spec"]["template"]["spec"]
    }

    pub fn pod_labels(&self, component: &str) -> Value {
        self.deployment(component)["spec"]["template"]["metadata"]["labels"].clone()
    }

    pub fn service_account(&self, component: &str) -> String {
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
    pub fn containers(&self) -> Vec<&Value> {
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
pub fn installs() -> Result<&'static [Install], Error> {
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
pub fn sidecar_example() -> Result<&'static Install, Error> {
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

/// Whether `labels` has every pair of `match_labels` (an empty selector selects everything).
pub fn selects(match_labels: &Value, labels: &Value) -> bool {
    match_labels
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| &labels[k] == v))
}

/// The number of a container's named port.
pub fn named_port(container: &Value, port: &str) -> Option<u64> {
    array(&container["ports"])
        .iter()
        .find(|p| p["name"] == port)
        .and_then(|p| p["containerPort"].as_u64())
}

/// Every value of `--name=value` among a container's arguments.
pub fn flags(container: &Value, name: &str) -> Vec<String> {
    let prefix = format!("{name}=");
    array(&container["args"])
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

pub fn flag(container: &Value, name: &str) -> Option<String> {
    flags(container, name).into_iter().next()
}

pub fn pod_spec(object: &Value) -> Option<&Value> {
    match kind(object) {
        "Pod" => object.get("spec"),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            object.pointer("/spec/template/spec")
        }
        "CronJob" => object.pointer("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

pub fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

pub fn namespace(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or_default()
}

pub fn component(object: &Value) -> Option<&str> {
    object["metadata"]["labels"]["app.kubernetes.io/component"].as_str()
}

pub fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// The objects of a multi-document YAML stream, empty documents left out.
pub fn documents(text: &str) -> Result<Vec<Value>, Error> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

pub fn chart_dir() -> PathBuf {
    repo().join("charts/weir")
}

pub fn chart() -> String {
    path_str(&chart_dir())
}

pub fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// Runs `helm` with no cluster (lint, template); returns stdout.
pub fn helm<I, S>(args: I) -> Result<String, Error>
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
pub fn helm_in<I, S>(plane: &ControlPlane, args: I) -> Result<String, Error>
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
pub fn kubectl_in<I, S>(
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

pub fn run<I, S>(
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
pub fn run_full<I, S>(
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
