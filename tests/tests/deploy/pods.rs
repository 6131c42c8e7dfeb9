//! The pod security of every workload: the restricted Pod Security profile at pod and
//! container level, a read-only root filesystem, resource requests and limits, probes.

use serde_json::Value;

use crate::TestResult;
use crate::support::{array, installs, kind, name, pod_spec, sidecar_example};

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
