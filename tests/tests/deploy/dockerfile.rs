//! The container build in `deploy/Dockerfile`, checked statically (no image is built here).

use std::collections::BTreeSet;

use crate::TestResult;
use crate::support::{installs, repo, sidecar_example};

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
