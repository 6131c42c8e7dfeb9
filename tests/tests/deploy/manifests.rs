//! What the manifests and the chart say agrees with the rest of the repository: the flags the
//! binaries accept, the CRD in `crds/`, the files in `deploy/`, the workspace version.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::TestResult;
use crate::support::{array, chart_dir, installs, repo, run, sidecar_example};

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
