//! The fixed newstyle handshake: greeting, client flags, then options until the client picks
//! an export (`NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME`) or leaves.
//!
//! ```mermaid
//! sequenceDiagram
//!     participant C as client
//!     participant S as rbdx nbd serve
//!     S->>C: NBDMAGIC, IHAVEOPT, FIXED_NEWSTYLE | NO_ZEROES
//!     C->>S: client flags
//!     C->>S: STRUCTURED_REPLY
//!     S->>C: ACK
//!     C->>S: SET_META_CONTEXT base:allocation
//!     S->>C: META_CONTEXT 1, ACK
//!     C->>S: GO "pool/image"
//!     S->>C: INFO export (size, flags), INFO block size, ACK
//!     Note over C,S: transmission
//! ```
//!
//! Compatibility: options the server does not know get `NBD_REP_ERR_UNSUP` and the handshake
//! goes on, so newer clients fall back to what this server speaks. TLS is not offered.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::Error;
use crate::export::{Export, Exports};
use crate::proto::{
    self, BASE_ALLOCATION, BASE_ALLOCATION_ID, ClientOption, MAX_OPTION_DATA, MAX_REQUEST,
    OptionHeader, info, opt, rep,
};

/// The most options one client may send before picking an export.
const MAX_OPTIONS: usize = 256;
/// Advertised minimum block size: any byte offset and length work.
const MIN_BLOCK: u32 = 1;

/// What a connection agreed on for the transmission phase.
#[derive(Debug)]
pub(crate) struct Session {
    /// The chosen export.
    pub export: Arc<Export>,
    /// True if replies to reads and block status are structured.
    pub structured: bool,
    /// The id of `base:allocation` if the client selected it.
    pub allocation_context: Option<u32>,
}

/// Meta contexts selected with `NBD_OPT_SET_META_CONTEXT`, for one export name.
#[derive(Debug, Default)]
struct Selected {
    export: String,
    allocation: bool,
}

/// Runs the handshake; `Ok(None)` means the client left (abort, or an unknown export chosen
/// with `NBD_OPT_EXPORT_NAME`, which the protocol can only answer by closing).
pub(crate) async fn negotiate<R, W>(
    r: &mut R,
    w: &mut W,
    exports: &Exports,
) -> Result<Option<Session>, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&proto::NBD_MAGIC.to_be_bytes());
    greeting.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
    greeting.extend_from_slice(&(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES).to_be_bytes());
    w.write_all(&greeting).await?;
    w.flush().await?;
    let client_flags = r.read_u32().await?;
    if client_flags & proto::CLIENT_FIXED_NEWSTYLE == 0 {
        return Err(Error::Protocol(
            "client does not speak fixed newstyle".to_owned(),
        ));
    }
    let no_zeroes = client_flags & proto::CLIENT_NO_ZEROES != 0;
    let mut structured = false;
    let mut selected = Selected::default();
    for _ in 0..MAX_OPTIONS {
        let mut head = [0u8; OptionHeader::SIZE];
        r.read_exact(&mut head).await?;
        let header = OptionHeader::parse(&head)?;
        if header.length > MAX_OPTION_DATA {
            send(w, header.option, rep::ERR_TOO_BIG, b"option data too large").await?;
            return Err(Error::Protocol(format!(
                "option {} with {} bytes of data",
                header.option, header.length
            )));
        }
        let mut data = vec![0u8; header.length as usize];
        r.read_exact(&mut data).await?;
        let parsed = match ClientOption::parse(header.option, &data) {
            Ok(o) => o,
            Err(e) => {
                send(w, header.option, rep::ERR_INVALID, e.to_string().as_bytes()).await?;
                continue;
            }
        };
        match parsed {
            ClientOption::ExportName(name) => {
                let Some(export) = exports.find(&name) else {
                    tracing::info!("client asked for unknown export '{name}'; closing");
                    return Ok(None);
                };
                export.refresh().await?;
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&export.size().to_be_bytes());
                out.extend_from_slice(&export.transmission_flags().to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                w.write_all(&out).await?;
                w.flush().await?;
                let allocation = selected.allocation && selected.export == name;
                return Ok(Some(session(export, structured, allocation)));
            }
            ClientOption::Abort => {
                let _ = send(w, opt::ABORT, rep::ACK, &[]).await;
                return Ok(None);
            }
            ClientOption::List => {
                for e in exports.iter() {
                    let data = proto::rep_server(e.name(), &e.description());
                    send(w, opt::LIST, rep::SERVER, &data).await?;
                }
                send(w, opt::LIST, rep::ACK, &[]).await?;
            }
            ClientOption::Info { go, name, requests } => {
                let option = header.option;
                let Some(export) = exports.find(&name) else {
                    let msg = format!("no export named '{name}'");
                    send(w, option, rep::ERR_UNKNOWN, msg.as_bytes()).await?;
                    continue;
                };
                export.refresh().await?;
                describe(w, option, &export, &name, &requests).await?;
                send(w, option, rep::ACK, &[]).await?;
                if go {
                    let allocation = selected.allocation && selected.export == name;
                    return Ok(Some(session(export, structured, allocation)));
                }
            }
            ClientOption::StructuredReply => {
                if structured {
                    send(
                        w,
                        header.option,
                        rep::ERR_INVALID,
                        b"structured replies already on",
                    )
                    .await?;
                } else {
                    structured = true;
                    send(w, header.option, rep::ACK, &[]).await?;
                }
            }
            ClientOption::MetaContext {
                set,
                export,
                queries,
            } => {
                let option = header.option;
                if !structured {
                    send(w, option, rep::ERR_INVALID, b"needs structured replies").await?;
                    continue;
                }
                if exports.find(&export).is_none() {
                    let msg = format!("no export named '{export}'");
                    send(w, option, rep::ERR_UNKNOWN, msg.as_bytes()).await?;
                    continue;
                }
                // A list without queries, or with the namespace "base:", shows every context.
                let matches = queries
                    .iter()
                    .any(|q| q == BASE_ALLOCATION || (!set && q == "base:"))
                    || (!set && queries.is_empty());
                if set {
                    selected = Selected {
                        export: export.clone(),
                        allocation: matches,
                    };
                }
                if matches {
                    let data = proto::rep_meta_context(BASE_ALLOCATION_ID, BASE_ALLOCATION);
                    send(w, option, rep::META_CONTEXT, &data).await?;
                }
                send(w, option, rep::ACK, &[]).await?;
            }
            ClientOption::Other(code) => {
                let msg = if code == opt::STARTTLS {
                    "TLS is not offered by this server".to_owned()
                } else {
                    format!("option {code} is not supported")
                };
                send(w, code, rep::ERR_UNSUP, msg.as_bytes()).await?;
            }
        }
    }
    Err(Error::Protocol(format!(
        "more than {MAX_OPTIONS} options without choosing an export"
    )))
}

fn session(export: Arc<Export>, structured: bool, allocation: bool) -> Session {
    Session {
        export,
        structured,
        allocation_context: allocation.then_some(BASE_ALLOCATION_ID),
    }
}

/// Sends the `NBD_REP_INFO` replies of `NBD_OPT_INFO` / `NBD_OPT_GO`.
async fn describe<W: AsyncWrite + Unpin>(
    w: &mut W,
    option: u32,
    export: &Export,
    asked_name: &str,
    requests: &[u16],
) -> Result<(), Error> {
    let data = proto::info_export(export.size(), export.transmission_flags());
    send(w, option, rep::INFO, &data).await?;
    let data = proto::info_block_size(MIN_BLOCK, export.preferred_block_size(), MAX_REQUEST);
    send(w, option, rep::INFO, &data).await?;
    if requests.contains(&info::NAME) || asked_name != export.name() {
        let data = proto::info_string(info::NAME, export.name());
        send(w, option, rep::INFO, &data).await?;
    }
    if requests.contains(&info::DESCRIPTION) {
        let data = proto::info_string(info::DESCRIPTION, &export.description());
        send(w, option, rep::INFO, &data).await?;
    }
    Ok(())
}

async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    option: u32,
    kind: u32,
    data: &[u8],
) -> Result<(), Error> {
    w.write_all(&proto::option_reply(option, kind, data))
        .await?;
    w.flush().await?;
    Ok(())
}
