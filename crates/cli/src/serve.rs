//! `cohort serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use cohort_server::Config;

pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<String>,
    pub durability: Option<String>,
}

pub async fn run(o: Overrides) -> Result<(), String> {
    let mut config = Config::load(o.config.as_deref())?;
    if let Some(d) = o.data_dir {
        config.data_dir = d;
    }
    if let Some(a) = o.grpc_addr {
        config.grpc_addr = a;
    }
    if let Some(m) = o.metrics_addr {
        config.metrics_addr = if m == "off" || m.is_empty() {
            None
        } else {
            Some(
                m.parse()
                    .map_err(|e| format!("--metrics-addr {m:?}: {e}"))?,
            )
        };
    }
    if let Some(d) = o.durability {
        config.durability = d;
    }
    let running = cohort_server::start(config.clone()).await?;
    if config.open_enrollment {
        tracing::warn!(
            "open enrollment is on: any party id nobody holds is bound to the first key that \
             logs in with it, so whoever reaches the relay first can take a signer's id; for \
             development and demos only. Turn it off (open_enrollment = false, \
             COHORT_OPEN_ENROLLMENT=false) and enroll parties with `cohort enroll`"
        );
    }
    if let Some(path) = &running.created_coordinator_key {
        tracing::info!(
            path = %path.display(),
            "created a coordinator key; `cohort keygen` and `cohort sign` use it by default"
        );
    }
    tracing::info!(
        grpc = %running.grpc_addr,
        metrics = %running.metrics_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        data = %config.database_path().display(),
        durability = %config.durability,
        "cohort relay serving"
    );
    // Tests and scripts read this line to learn the bound port.
    println!(
        "listening grpc={} metrics={}",
        running.grpc_addr,
        running
            .metrics_addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "off".into())
    );
    cohort_server::serve::termination().await;
    tracing::info!("shutting down: draining streams");
    running.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
