//! The one integration test binary (as ripgrep does): real etcd and OpenBao
//! servers started per test, the real `cfgsync` binary.

mod support;

mod cli;
mod edges;
mod kubernetes;
mod laptop;
mod laptop_bench;
mod laptop_roles;
mod run_with_env;
mod servers_e2e;
mod service;
mod service_etcd;
mod service_ha;
mod service_vault;
