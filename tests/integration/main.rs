//! The one integration test binary (as ripgrep does): real etcd and OpenBao
//! servers started per test, the real `cfgsync` binary.

mod support;

mod boundaries;
mod ci_openapi;
mod ci_requests;
mod ci_targets;
mod cli;
mod crash;
mod deploy;
mod dotenv_readers;
mod edges;
mod estate;
mod faults;
mod faults_service;
mod import;
mod kubernetes;
mod kubernetes_ownership;
mod laptop;
mod laptop_bench;
mod laptop_roles;
mod layers;
mod library;
mod ownership;
mod readme;
mod redaction;
mod run_with_env;
mod sandbox;
mod servers_e2e;
mod service;
mod service_etcd;
mod service_ha;
mod service_page;
mod service_readiness;
mod service_roles;
mod service_spin;
mod service_vault;
mod service_watch;
mod soak;
mod target_contract;
mod tls_etcd;
mod tls_matrix;
mod tls_targets;
mod tls_vault;
mod vault_kubernetes_auth;
mod walk;
