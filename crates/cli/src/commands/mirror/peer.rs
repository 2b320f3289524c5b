//! `rbdx mirror pool peer bootstrap create|import` and `peer add|remove|set`.

use std::path::Path;

use rbdx_image::Cluster;
use rbdx_mirror::bootstrap::{self, ImportOptions};
use rbdx_mirror::peer::{Direction, Peer, PeerSecret};
use rbdx_mirror::token::Token;

use super::pool_target;
use crate::args::{BootstrapCommand, MirrorPeerCommand};
use crate::commands::read_input;
use crate::error::{CliError, CliResult};
use crate::output::Printer;

/// Runs a `mirror pool peer` command.
pub async fn run(cluster: &Cluster, command: MirrorPeerCommand, printer: Printer) -> CliResult {
    match command {
        MirrorPeerCommand::Bootstrap {
            command:
                BootstrapCommand::Create {
                    site_name,
                    endpoint,
                    pool,
                },
        } => {
            let target = pool_target(cluster, &pool).await?;
            let token = bootstrap::create(
                cluster.store(),
                &target.pool,
                site_name.as_deref(),
                endpoint,
            )
            .await?;
            println!("{}", token.encode());
        }
        MirrorPeerCommand::Bootstrap {
            command:
                BootstrapCommand::Import {
                    site_name,
                    direction,
                    endpoint,
                    pool,
                    token,
                },
        } => {
            let target = pool_target(cluster, &pool.to_pool_arg()).await?;
            let text = read_input(Path::new(&token))
                .map_err(|e| CliError::io("cannot read the bootstrap token", e))?;
            let token = Token::decode(&String::from_utf8_lossy(&text))?;
            let options = ImportOptions {
                site_name,
                direction: Direction::parse(&direction).unwrap_or(Direction::RxTx),
                endpoint,
            };
            let peer = bootstrap::import(cluster.store(), &target.pool, &token, &options).await?;
            printer.print("peer", &peer, |_| {});
        }
        MirrorPeerCommand::Add {
            pool,
            remote,
            remote_client_name,
            remote_cluster,
            remote_endpoint,
            remote_fingerprint,
            remote_key_file,
            direction,
        } => {
            let target = pool_target(cluster, &pool.to_pool_arg()).await?;
            let config = target.mirror.load().await?;
            rbdx_mirror::pool::require_enabled(&config, &target.label)?;
            let (client, site) = remote.split_once('@').ok_or_else(|| {
                CliError::invalid(format!(
                    "peer '{remote}' is not of the form client.NAME@SITE"
                ))
            })?;
            let client = remote_client_name.unwrap_or_else(|| client.to_owned());
            let site = remote_cluster.unwrap_or_else(|| site.to_owned());
            rbdx_mirror::site::check_name(&site)?;
            if config.peers().iter().any(|p| p.site_name == site) {
                return Err(CliError::with_code(
                    format!("pool {} already has a peer at site {site}", target.label),
                    17,
                ));
            }
            let peer = Peer {
                uuid: rbdx_image::new_uuid()?,
                site_name: site,
                mirror_uuid: String::new(),
                direction: Direction::parse(&direction).unwrap_or(Direction::RxTx),
                client_name: full_client(&client),
                fsid: String::new(),
            };
            if let Some(secret) = secret_of(
                remote_endpoint,
                remote_fingerprint,
                remote_key_file.as_deref(),
            )? {
                target.mirror.set_peer_secret(&peer.uuid, &secret).await?;
            }
            target.mirror.put_peer(&peer).await?;
            println!("{}", peer.uuid);
        }
        MirrorPeerCommand::Remove { pool, uuid } => {
            let target = pool_target(cluster, &pool.to_pool_arg()).await?;
            let config = target.mirror.load().await?;
            if !config.peers().iter().any(|p| p.uuid == uuid) {
                return Err(CliError::with_code(
                    format!("pool {} has no peer {uuid}", target.label),
                    2,
                ));
            }
            target.mirror.remove_peer(&uuid).await?;
        }
        MirrorPeerCommand::Set {
            pool,
            uuid,
            key,
            value,
        } => {
            let target = pool_target(cluster, &pool.to_pool_arg()).await?;
            let config = target.mirror.load().await?;
            let mut peer = config
                .peers()
                .into_iter()
                .find(|p| p.uuid == uuid)
                .ok_or_else(|| {
                    CliError::with_code(format!("pool {} has no peer {uuid}", target.label), 2)
                })?;
            let mut secret = target
                .mirror
                .peer_secret(&uuid)
                .await?
                .unwrap_or(PeerSecret {
                    endpoint: String::new(),
                    fingerprint: String::new(),
                    key: String::new(),
                });
            match key.as_str() {
                "direction" => {
                    peer.direction = match Direction::parse(&value) {
                        Some(Direction::TxOnly) | None => {
                            return Err(CliError::invalid(format!(
                                "invalid direction '{value}': rx-only or rx-tx"
                            )));
                        }
                        Some(d) => d,
                    }
                }
                "site-name" | "site_name" => {
                    rbdx_mirror::site::check_name(&value)?;
                    peer.site_name = value;
                }
                "client" => peer.client_name = full_client(&value),
                "mon-host" | "mon_host" | "endpoint" => secret.endpoint = value,
                "fingerprint" => secret.fingerprint = value,
                "key-file" | "key_file" => secret.key = read_key(Path::new(&value))?,
                other => {
                    return Err(CliError::invalid(format!(
                        "unknown peer setting '{other}': direction, site-name, client, \
                         mon-host, fingerprint or key-file"
                    )));
                }
            }
            if !secret.endpoint.is_empty() || !secret.key.is_empty() {
                target.mirror.set_peer_secret(&uuid, &secret).await?;
            }
            target.mirror.put_peer(&peer).await?;
        }
    }
    Ok(())
}

fn full_client(name: &str) -> String {
    if name.starts_with("client.") {
        name.to_owned()
    } else {
        format!("client.{name}")
    }
}

fn read_key(path: &Path) -> CliResult<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::io(format!("cannot read {}", path.display()), e))?;
    Ok(text.trim().to_owned())
}

fn secret_of(
    endpoint: Option<String>,
    fingerprint: Option<String>,
    key_file: Option<&Path>,
) -> CliResult<Option<PeerSecret>> {
    match (endpoint, fingerprint, key_file) {
        (None, None, None) => Ok(None),
        (Some(endpoint), Some(fingerprint), Some(file)) => Ok(Some(PeerSecret {
            endpoint,
            fingerprint,
            key: read_key(file)?,
        })),
        _ => Err(CliError::invalid(
            "a peer's gateway needs --remote-endpoint, --remote-fingerprint and \
             --remote-key-file together",
        )),
    }
}
