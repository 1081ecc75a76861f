//! The one integration test binary (as ripgrep does): real etcd and OpenBao
//! servers started per test, the real `cfgsync` binary.

mod support;

mod cli;
mod crash;
mod dotenv_readers;
mod faults;
mod faults_service;
mod kubernetes;
mod laptop;
mod laptop_bench;
mod laptop_roles;
mod sandbox;
mod servers_e2e;
mod service;
mod service_etcd;
mod service_ha;
mod service_page;
mod service_readiness;
mod service_roles;
mod service_vault;
mod soak;
