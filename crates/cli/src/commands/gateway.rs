//! `rbdx gateway serve` and `rbdx gateway key create|ls|rm`: this site's store served to
//! other sites on one TLS port, and the keys its clients authenticate with.
//!
//! `serve` prints where it listens and the certificate's fingerprint (one JSON line with
//! `--format json`), logs connections on standard error, and on SIGTERM or SIGINT answers
//! what is in flight and closes. It records the address and fingerprint it serves with in the
//! store, so that `key create` can print a client config without being told them.

use std::sync::Arc;
use std::time::Duration;

use rbdx_objstore::ObjectStore;
use rbdx_peer::{BackendSource, Gateway, GatewayOptions, Identity, KeyRecord, Keys, Profile};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::args::{GatewayCommand, GatewayServeArgs, Global, KeyCommand};
use crate::error::{CliError, CliResult};
use crate::output::{Printer, utc};
use crate::store;

/// Runs a `gateway` command.
pub async fn run(
    global: &Global,
    store: Arc<dyn ObjectStore>,
    command: GatewayCommand,
    printer: Printer,
) -> CliResult {
    match command {
        GatewayCommand::Serve(args) => serve(global, store, args, printer).await,
        GatewayCommand::Key { command } => match command {
            KeyCommand::Create {
                name,
                profile,
                pools,
                endpoint,
            } => key_create(store, &name, &profile, pools, endpoint, printer).await,
            KeyCommand::Ls => key_ls(store, printer).await,
            KeyCommand::Rm { name } => Ok(Keys::new(store).remove(&name).await?),
        },
    }
}

#[derive(Serialize)]
struct Started {
    address: String,
    fingerprint: String,
    backend: String,
}

fn read_pem(path: &std::path::Path) -> CliResult<String> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::io(format!("cannot read {}", path.display()), e))
}

async fn serve(
    global: &Global,
    admin: Arc<dyn ObjectStore>,
    args: GatewayServeArgs,
    printer: Printer,
) -> CliResult {
    let config = store::config(global)?;
    if config.backend == "memory" {
        return Err(CliError::invalid(
            "the memory backend cannot be served: each session would see its own empty store",
        ));
    }
    let identity = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Identity {
            cert_pem: read_pem(cert)?,
            key_pem: read_pem(key)?,
        },
        _ => rbdx_peer::stored_identity(&admin).await?,
    };
    let bandwidth_limit = args
        .bandwidth_limit
        .as_deref()
        .map(|b| crate::size::parse_size(b, 1))
        .transpose()?;
    let opts = GatewayOptions {
        bandwidth_limit,
        session_grace: Duration::from_secs(args.session_grace),
        ..GatewayOptions::default()
    };
    let backend = config.backend.clone();
    let source = Arc::new(BackendSource {
        registry: store::registry(),
        config,
    });
    let gateway = Gateway::new(source, admin.clone(), &identity, opts)?;
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .map_err(|e| CliError::io(format!("cannot listen on {}", args.bind), e))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::io("cannot read the listening address", e))?
        .to_string();
    let served = rbdx_peer::served::Served {
        endpoint: address.clone(),
        fingerprint: gateway.fingerprint().to_owned(),
    };
    rbdx_peer::served::record(&admin, &served).await?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| CliError::io("cannot handle SIGTERM", e))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| CliError::io("cannot handle SIGINT", e))?;
    let started = Started {
        address,
        fingerprint: gateway.fingerprint().to_owned(),
        backend,
    };
    printer.print("gateway", &started, |s| {
        println!(
            "gateway serving the {} store at {} (certificate {})",
            s.backend, s.address, s.fingerprint
        );
    });
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let stop = async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("gateway: stopping: answering requests in flight, then closing");
    };
    gateway.serve(listener, stop).await?;
    Ok(())
}

#[derive(Serialize)]
struct Created {
    name: String,
    profile: &'static str,
    pools: Vec<String>,
    endpoint: String,
    fingerprint: String,
    key: String,
    config: String,
}

async fn key_create(
    store: Arc<dyn ObjectStore>,
    name: &str,
    profile: &str,
    pools: Vec<String>,
    endpoint: Option<String>,
    printer: Printer,
) -> CliResult {
    let profile = Profile::parse(profile)
        .ok_or_else(|| CliError::invalid(format!("unknown profile '{profile}'")))?;
    for pool in &pools {
        store.pool_lookup(pool).await?;
    }
    let (endpoint, fingerprint) = rbdx_peer::served::announced(&store, endpoint).await?;
    let record = Keys::new(store).create(name, profile, pools).await?;
    let config = client_config(&record, &endpoint, &fingerprint);
    let created = Created {
        name: record.name.clone(),
        profile: record.profile.as_str(),
        pools: record.pools.clone(),
        endpoint,
        fingerprint,
        key: record.secret.clone(),
        config,
    };
    printer.print("key", &created, |c| print!("{}", c.config));
    Ok(())
}

/// Returns the client config file of key `record`.
fn client_config(record: &KeyRecord, endpoint: &str, fingerprint: &str) -> String {
    let pools = if record.pools.is_empty() {
        "every pool".to_owned()
    } else {
        format!("pools {}", record.pools.join(", "))
    };
    format!(
        "# rbdx client config: key {} ({}, {pools}) of the gateway at {endpoint}\n\
         [cluster]\n\
         backend = \"remote\"\n\
         endpoint = \"{endpoint}\"\n\
         fingerprint = \"{fingerprint}\"\n\
         name = \"{}\"\n\
         key = \"{}\"\n",
        record.name,
        record.profile.as_str(),
        record.name,
        record.secret
    )
}

#[derive(Serialize)]
struct Listed {
    name: String,
    profile: &'static str,
    pools: Vec<String>,
    created: String,
}

async fn key_ls(store: Arc<dyn ObjectStore>, printer: Printer) -> CliResult {
    let keys: Vec<Listed> = Keys::new(store)
        .list()
        .await?
        .into_iter()
        .map(|k| Listed {
            profile: k.profile.as_str(),
            created: utc(std::time::UNIX_EPOCH + Duration::from_secs(k.created)),
            name: k.name,
            pools: k.pools,
        })
        .collect();
    printer.print("keys", &keys, |keys| {
        if keys.is_empty() {
            return;
        }
        println!("{:<24} {:<12} {:<20} CREATED", "NAME", "PROFILE", "POOLS");
        for k in keys {
            let pools = if k.pools.is_empty() {
                "*".to_owned()
            } else {
                k.pools.join(",")
            };
            println!(
                "{:<24} {:<12} {:<20} {}",
                k.name, k.profile, pools, k.created
            );
        }
    });
    Ok(())
}
