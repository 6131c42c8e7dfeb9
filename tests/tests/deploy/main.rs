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
//!
//! One module a subject, each test named as the requirement it checks
//! (`cargo test -p weir-e2e --test deploy NAME` runs one); [`support`] renders the installs
//! and runs `helm` and `kubectl`.

mod channel;
mod chart;
mod cluster;
mod dockerfile;
mod manifests;
mod networkpolicy;
mod pods;
mod rbac;
mod support;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Error = Box<dyn std::error::Error>;
