//! Fault injection, seen through the `kube` client: 500s surface as API
//! errors, "down" refuses connections at once, latency delays answers, a
//! dropped connection is a transport error, and everything recovers.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube_emulator::{Fault, Verb};

use crate::support::{Cluster, api_error};

#[tokio::test]
async fn injected_errors_surface_as_500_internal_error_then_stop() {
    let c = Cluster::start("fault-500").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    c.emu.set_fault(Fault::Errors { count: 2 });
    for _ in 0..2 {
        let err = api_error(secrets.list(&ListParams::default()).await, "500");
        assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    }
    secrets.list(&ListParams::default()).await.expect("the third request is served");
    assert_eq!(c.emu.requests().get(Verb::List, "secrets"), 3, "failed requests count too");
}

#[tokio::test]
async fn errors_can_target_writes_only() {
    let c = Cluster::start("fault-writes").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    c.emu.set_fault_on(&Verb::WRITES, Fault::ErrorRate { rate: 1.0 });
    secrets.list(&ListParams::default()).await.expect("reads still work");
    let s: Secret = serde_json::from_value(serde_json::json!({"metadata": {"name": "s"}})).unwrap();
    let err = api_error(secrets.create(&Default::default(), &s).await, "500 on a write");
    assert_eq!(err.code, 500);
    c.emu.clear_fault();
    secrets.create(&Default::default(), &s).await.expect("cleared");
}

#[tokio::test]
async fn an_error_rate_fails_about_that_share_of_requests() {
    let c = Cluster::start("fault-rate").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    c.emu.set_fault(Fault::ErrorRate { rate: 0.5 });
    let mut failed = 0;
    for _ in 0..200 {
        if secrets.list(&ListParams::default()).await.is_err() {
            failed += 1;
        }
    }
    assert!((60..=140).contains(&failed), "{failed} of 200 failed at rate 0.5");
}

#[tokio::test]
async fn down_refuses_connections_quickly_and_recovers() {
    let c = Cluster::start("fault-down").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    secrets.list(&ListParams::default()).await.expect("up");
    c.emu.set_fault(Fault::Down);
    assert!(std::net::TcpStream::connect(c.emu.addr()).is_err(), "the kernel refuses connections while down");
    let t = Instant::now();
    let err = secrets.list(&ListParams::default()).await.expect_err("down");
    assert!(t.elapsed() < Duration::from_secs(2), "failed after {:?}", t.elapsed());
    assert!(!matches!(err, kube::Error::Api(_)), "a transport error, not an API answer: {err:?}");
    c.emu.clear_fault();
    secrets.list(&ListParams::default()).await.expect("back up on the same address");
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let c = Cluster::start("fault-latency").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    c.emu.set_fault(Fault::Latency(Duration::from_millis(300)));
    let t = Instant::now();
    secrets.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300), "answered after {:?}", t.elapsed());
    c.emu.clear_fault();
    let t = Instant::now();
    secrets.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn dropped_connections_are_transport_errors() {
    let c = Cluster::start("fault-drop").await;
    let secrets: Api<Secret> = Api::namespaced(c.client.clone(), "default");
    c.emu.set_fault(Fault::DropConnections { count: 1 });
    let err = secrets.list(&ListParams::default()).await.expect_err("dropped");
    assert!(!matches!(err, kube::Error::Api(_)), "{err:?}");
    secrets.list(&ListParams::default()).await.expect("the next one is served");
}
