//! End-to-end test support for Weir: a real Kubernetes control plane (etcd and kube-apiserver,
//! no nodes), the way Go projects use envtest.
//!
//! Start with [`ControlPlane::shared`]: the first test of a test binary that calls it starts
//! etcd and kube-apiserver on free loopback ports; every test then gets its own namespace from
//! [`ControlPlane::namespace`], a [`kube::Client`] from [`ControlPlane::client`], and runs
//! `kubectl` or `helm` against it with [`ControlPlane::kubectl`] and [`ControlPlane::helm`].
//! [`ControlPlane::start`] gives a test its own control plane instead, stopped when dropped.
//!
//! The binaries are built from Go modules by `scripts/control-plane` (which `scripts/test` runs
//! first) into `~/.cache/weir/k8s`; [`binaries`] says where they are looked for, envtest's
//! `KUBEBUILDER_ASSETS` included. Tests fail, never skip, when they are missing.
//!
//! [`objects`] builds the Services and EndpointSlices a cluster's own controllers would make.
//! [`weir`] runs Weir's own programs as processes (the controller, data planes and `weir-echo`
//! backends) for the tests that drive the whole loop.

pub mod binaries;
pub mod control_plane;
pub mod error;
pub mod objects;
pub mod weir;

pub use binaries::Binaries;
pub use control_plane::ControlPlane;
pub use error::Error;
