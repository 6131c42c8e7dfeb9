//! The chart's own checks: its values schema, and `helm lint`.

use serde_json::Value;

use crate::TestResult;
use crate::support::{chart, chart_dir, everything_on_but_service_monitor, helm, path_str};

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
