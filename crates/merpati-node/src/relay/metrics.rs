//! The relay's Prometheus metrics and a minimal HTTP endpoint serving them.
//!
//! Names carry the `merpati_` prefix: `merpati_mailbox_deposits_total`,
//! `merpati_mailbox_refusals_total{kind="mailbox_full"}`, `merpati_mailbox_stored_bytes`,
//! `merpati_relay_reservations`, …
//!
//! The endpoint answers `GET /metrics` with the OpenMetrics text exposition when the request
//! accepts it (Prometheus asks for it), else with the classic Prometheus text format (what `curl`
//! and older scrapers get), and anything else with 404. It is deliberately tiny (no HTTP crate): it reads at most [`MAX_REQUEST_HEAD`] bytes of
//! request head within [`HEAD_TIMEOUT`], answers once and closes, and serves at most
//! [`MAX_CONNECTIONS`] connections at a time; more wait in the listener's backlog.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use merpati_proto::wire::Refusal;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::mailboxes::MailboxStats;

/// The most bytes of request line and headers read from a metrics client.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a metrics client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The most metrics connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long, and for how many bytes, a closing connection's leftover input is read.
const LINGER: Duration = Duration::from_secs(1);
const MAX_LINGER_BYTES: usize = 64 * 1024;
/// The content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic Prometheus text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    kind: &'static str,
}

/// The mailbox service's metrics. Cloning shares the same metrics.
#[derive(Clone, Debug, Default)]
pub struct MailboxMetrics {
    deposits: Counter,
    fetches: Counter,
    deletes: Counter,
    envelopes_fetched: Counter,
    envelopes_deleted: Counter,
    envelopes_expired: Counter,
    refusals: Family<RefusalLabels, Counter>,
    stored_bytes: Gauge,
    stored_envelopes: Gauge,
    mailboxes: Gauge,
    long_polls: Gauge,
    long_polls_declined: Counter,
    fetch_marks: Gauge,
    undecodable: Counter,
    relay_reservations: Gauge,
}

impl MailboxMetrics {
    /// Creates the metrics and registers them in `registry` under the `merpati` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("merpati");
        r.register("mailbox_deposits", "Deposits stored durably", metrics.deposits.clone());
        r.register("mailbox_fetches", "Fetch requests answered with a page", metrics.fetches.clone());
        r.register("mailbox_deletes", "Delete requests answered", metrics.deletes.clone());
        r.register(
            "mailbox_envelopes_fetched",
            "Envelopes returned by fetches",
            metrics.envelopes_fetched.clone(),
        );
        r.register(
            "mailbox_envelopes_deleted",
            "Envelopes deleted by their owners",
            metrics.envelopes_deleted.clone(),
        );
        r.register(
            "mailbox_envelopes_expired",
            "Envelopes dropped when their TTL ran out",
            metrics.envelopes_expired.clone(),
        );
        r.register("mailbox_refusals", "Mailbox requests refused, by reason", metrics.refusals.clone());
        r.register("mailbox_stored_bytes", "Envelope bytes stored", metrics.stored_bytes.clone());
        r.register("mailbox_stored_envelopes", "Envelopes stored", metrics.stored_envelopes.clone());
        r.register("mailbox_mailboxes", "Mailboxes holding envelopes", metrics.mailboxes.clone());
        r.register("mailbox_long_polls", "Fetches waiting for a deposit now", metrics.long_polls.clone());
        r.register(
            "mailbox_long_polls_declined",
            "Fetches answered at once because the long-poll caps (relay, network, peer) were reached",
            metrics.long_polls_declined.clone(),
        );
        r.register(
            "mailbox_fetch_marks",
            "Mailboxes with a fetch mark (compare with max_fetch_marks)",
            metrics.fetch_marks.clone(),
        );
        r.register(
            "mailbox_undecodable_requests",
            "Mailbox requests whose bytes were not the protocol (not CBOR, or not a request); not answered",
            metrics.undecodable.clone(),
        );
        r.register(
            "relay_reservations",
            "Peers holding a relay circuit reservation now",
            metrics.relay_reservations.clone(),
        );
        // Every refusal series exists from the start, at 0, so rates and alerts work before the
        // first refusal of a kind.
        for kind in REFUSAL_KINDS {
            let _ = metrics.refusals.get_or_create(&RefusalLabels { kind });
        }
        metrics
    }

    /// Counts a fetch answered at once because the long-poll caps were reached.
    pub(crate) fn long_poll_declined(&self) {
        self.long_polls_declined.inc();
    }

    /// Counts a mailbox request that could not be decoded (the network layer calls this).
    pub fn undecodable_request(&self) {
        self.undecodable.inc();
    }

    /// Sets the number of relay reservations held (the network layer calls this).
    pub fn set_relay_reservations(&self, reservations: u64) {
        self.relay_reservations.set(i64::try_from(reservations).unwrap_or(i64::MAX));
    }

    /// The gauge of relay reservations held, for the network layer to keep current.
    pub fn relay_reservations_gauge(&self) -> Gauge {
        self.relay_reservations.clone()
    }

    /// Counts a refusal by its kind.
    pub fn refused(&self, refusal: &Refusal) {
        self.refusals.get_or_create(&RefusalLabels { kind: refusal_kind(refusal) }).inc();
    }

    /// Counts a stored deposit.
    pub(crate) fn deposited(&self) {
        self.deposits.inc();
    }

    /// Counts a fetch answered with `items` envelopes.
    pub(crate) fn fetched(&self, items: usize) {
        self.fetches.inc();
        self.envelopes_fetched.inc_by(items as u64);
    }

    /// Counts a delete that removed `count` envelopes.
    pub(crate) fn deleted(&self, count: u32) {
        self.deletes.inc();
        self.envelopes_deleted.inc_by(u64::from(count));
    }

    /// Counts envelopes dropped for age.
    pub(crate) fn expired(&self, count: u64) {
        self.envelopes_expired.inc_by(count);
    }

    /// Sets the number of fetches waiting for a deposit.
    pub(crate) fn set_long_polls(&self, waiting: usize) {
        self.long_polls.set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// Sets the storage gauges.
    pub fn set_stored(&self, stats: &MailboxStats) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.stored_bytes.set(gauge(stats.bytes));
        self.stored_envelopes.set(gauge(stats.envelopes));
        self.mailboxes.set(gauge(stats.mailboxes));
        self.fetch_marks.set(gauge(stats.fetch_marks));
    }
}

/// Every label value of [`refusal_kind`].
const REFUSAL_KINDS: [&str; 8] = [
    "mailbox_full",
    "too_large",
    "rate_limited",
    "unauthorized",
    "relay_full",
    "malformed",
    "unknown_mailbox",
    "internal",
];

/// The label value of a refusal.
fn refusal_kind(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::MailboxFull => "mailbox_full",
        Refusal::TooLarge { .. } => "too_large",
        Refusal::RateLimited { .. } => "rate_limited",
        Refusal::Unauthorized => "unauthorized",
        Refusal::RelayFull => "relay_full",
        Refusal::Malformed => "malformed",
        Refusal::UnknownMailbox => "unknown_mailbox",
        Refusal::Internal => "internal",
        Refusal::NotReserved => "not_reserved",
        Refusal::UnknownBlob => "unknown_blob",
        // A user node's answer; a relay never gives it.
        Refusal::SessionConflict => "session_conflict",
    }
}

/// Every label value a blob request may be refused with.
const BLOB_REFUSAL_KINDS: [&str; 8] = [
    "too_large",
    "rate_limited",
    "unauthorized",
    "relay_full",
    "malformed",
    "not_reserved",
    "unknown_blob",
    "internal",
];

/// The file store's metrics (`merpati_blob_…`). Cloning shares the same metrics.
#[derive(Clone, Debug, Default)]
pub struct BlobMetrics {
    created: Counter,
    chunks_stored: Counter,
    chunks_served: Counter,
    acks: Counter,
    deleted: Counter,
    expired: Counter,
    refusals: Family<RefusalLabels, Counter>,
    blobs: Gauge,
    reserved_bytes: Gauge,
}

impl BlobMetrics {
    /// Creates the metrics and registers them in `registry` under the `merpati` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("merpati");
        r.register("blob_created", "Blobs created (room reserved for a file)", metrics.created.clone());
        r.register("blob_chunks_stored", "Chunks stored durably", metrics.chunks_stored.clone());
        r.register("blob_chunks_served", "Chunks returned to readers", metrics.chunks_served.clone());
        r.register("blob_acks", "Readers' acks of a whole file", metrics.acks.clone());
        r.register("blob_deleted", "Blobs withdrawn by their uploaders", metrics.deleted.clone());
        r.register("blob_expired", "Blobs dropped when their TTL ran out", metrics.expired.clone());
        r.register("blob_refusals", "Blob requests refused, by reason", metrics.refusals.clone());
        r.register("blob_blobs", "Blobs kept", metrics.blobs.clone());
        r.register(
            "blob_reserved_bytes",
            "Bytes reserved by the blobs kept (compare with blob_budget_mib)",
            metrics.reserved_bytes.clone(),
        );
        for kind in BLOB_REFUSAL_KINDS {
            let _ = metrics.refusals.get_or_create(&RefusalLabels { kind });
        }
        metrics
    }

    /// Counts a refusal by its kind.
    pub fn refused(&self, refusal: &Refusal) {
        self.refusals.get_or_create(&RefusalLabels { kind: refusal_kind(refusal) }).inc();
    }

    pub(crate) fn created(&self) {
        self.created.inc();
    }

    pub(crate) fn chunk_stored(&self) {
        self.chunks_stored.inc();
    }

    pub(crate) fn served(&self, chunks: usize) {
        self.chunks_served.inc_by(chunks as u64);
    }

    pub(crate) fn acked(&self) {
        self.acks.inc();
    }

    pub(crate) fn deleted(&self) {
        self.deleted.inc();
    }

    pub(crate) fn expired(&self, count: u64) {
        self.expired.inc_by(count);
    }

    /// Sets the storage gauges.
    pub fn set_stored(&self, stats: &super::blobs::BlobStats) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.blobs.set(gauge(stats.blobs));
        self.reserved_bytes.set(gauge(stats.bytes));
    }
}

/// Serves `registry` on `listener` (`GET /metrics`) until `shutdown` is cancelled; then stops
/// accepting and ends the connections in progress.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        // A slot first, then a connection: at the cap, clients wait in the backlog.
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let registry = Arc::clone(&registry);
        connections.spawn(async move {
            let _permit = permit;
            if let Err(e) = answer(stream, &registry).await {
                tracing::debug!(error = %e, "metrics: connection ended with an error");
            }
        });
    }
    connections.shutdown().await;
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = vec![0u8; MAX_REQUEST_HEAD];
    let read = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut head)).await;
    let response = match read {
        Err(_) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => simple_response("431 Request Header Fields Too Large"),
        Ok(Ok(Some(len))) => {
            let mut parts = head[..len].split(|&b| b == b' ' || b == b'\r');
            let method = parts.next().unwrap_or_default();
            let target = parts.next().unwrap_or_default();
            let path = target.split(|&b| b == b'?').next().unwrap_or_default();
            if method == b"GET" && path == b"/metrics" {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, registry) {
                    Ok(()) => {
                        let (content_type, body) = if accepts_openmetrics(&head[..len]) {
                            (CONTENT_TYPE, body)
                        } else {
                            (CLASSIC_CONTENT_TYPE, to_classic(&body))
                        };
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    Err(_) => simple_response("500 Internal Server Error"),
                }
            } else {
                simple_response("404 Not Found")
            }
        }
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    // Lingering close: closing with unread input sends a reset, which can destroy the answer
    // before the client reads it (the 431 case), so read what is left, briefly and bounded.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        let mut drained = 0;
        while drained < MAX_LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
    Ok(())
}

/// Reads until the blank line ending a request head; `None` if it does not fit in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    let mut len = 0;
    loop {
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(len));
        }
        if len == buf.len() {
            return Ok(None);
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
    }
}

/// Whether a request head has an `Accept` header naming the OpenMetrics text format.
fn accepts_openmetrics(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept") && value.contains("application/openmetrics-text")
        })
    })
}

/// The classic Prometheus text format of an OpenMetrics exposition: no `# EOF` or `# UNIT`
/// lines, counter families named by their `_total` samples, info families as gauges named by
/// their `_info` samples, `unknown` as `untyped`. The samples themselves read the same.
fn to_classic(openmetrics: &str) -> String {
    let mut renamed: HashMap<&str, (String, &str)> = HashMap::new();
    for line in openmetrics.lines() {
        let mut words = line.splitn(4, ' ');
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            match kind {
                "counter" => renamed.insert(name, (format!("{name}_total"), "counter")),
                "info" => renamed.insert(name, (format!("{name}_info"), "gauge")),
                "unknown" => renamed.insert(name, (name.to_owned(), "untyped")),
                _ => None,
            };
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let mut words = line.splitn(4, ' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name), Some(_)) if renamed.contains_key(name) => {
                let (new_name, kind) = &renamed[name];
                out.push_str(&format!("# TYPE {new_name} {kind}"));
            }
            (Some("#"), Some("HELP"), Some(name), rest) if renamed.contains_key(name) => {
                out.push_str(&format!("# HELP {} {}", renamed[name].0, rest.unwrap_or_default()));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn simple_response(status: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn the_endpoint_serves_counters_and_404_otherwise() {
        let mut registry = Registry::default();
        let metrics = MailboxMetrics::register(&mut registry);
        metrics.deposited();
        metrics.deposited();
        metrics.refused(&Refusal::MailboxFull);
        metrics.set_relay_reservations(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, Arc::new(registry), shutdown.clone()));

        let openmetrics = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n";
        let response = get(addr, openmetrics).await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains(CONTENT_TYPE));
        assert!(response.contains("merpati_mailbox_deposits_total 2"), "{response}");
        assert!(response.contains("merpati_mailbox_refusals_total{kind=\"mailbox_full\"} 1"), "{response}");
        assert!(response.contains("merpati_relay_reservations 3"), "{response}");
        for kind in REFUSAL_KINDS.iter().filter(|kind| **kind != "mailbox_full") {
            let zero = format!("merpati_mailbox_refusals_total{{kind=\"{kind}\"}} 0");
            assert!(response.contains(&zero), "no {zero} in {response}");
        }
        assert!(response.trim_end().ends_with("# EOF"));

        // Without asking for OpenMetrics (curl, older scrapers): the classic format.
        let response = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(response.contains(CLASSIC_CONTENT_TYPE), "{response}");
        assert!(response.contains("# TYPE merpati_mailbox_deposits_total counter\n"), "{response}");
        assert!(response.contains("merpati_mailbox_deposits_total 2"), "{response}");
        assert!(response.contains("# TYPE merpati_relay_reservations gauge"), "{response}");
        assert!(!response.contains("# EOF"), "{response}");

        let response = get(addr, "GET /other HTTP/1.1\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
        let response = get(addr, &format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000))).await;
        assert!(response.starts_with("HTTP/1.1 431"), "{response}");

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
    }

    #[test]
    fn the_classic_format_renames_counter_and_info_families() {
        let openmetrics = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total 3\n\
                           # HELP a_build The build.\n# TYPE a_build info\na_build_info{version=\"1\"} 1\n\
                           # HELP a_bytes Bytes.\n# TYPE a_bytes gauge\n# UNIT a_bytes bytes\na_bytes 7\n# EOF\n";
        let classic = to_classic(openmetrics);
        assert_eq!(
            classic,
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total 3\n\
             # HELP a_build_info The build.\n# TYPE a_build_info gauge\na_build_info{version=\"1\"} 1\n\
             # HELP a_bytes Bytes.\n# TYPE a_bytes gauge\na_bytes 7\n"
        );
    }

    /// Every `merpati_*` metric docs/relay-operators.md lists is one the relay serves.
    #[test]
    fn the_operators_guide_names_real_metrics() {
        let mut registry = Registry::default();
        let _metrics = MailboxMetrics::register(&mut registry);
        let _blobs = BlobMetrics::register(&mut registry);
        super::super::process::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let guide = include_str!("../../../../docs/relay-operators.md");
        let listed: Vec<&str> = guide
            .lines()
            .filter_map(|line| line.strip_prefix("| `merpati_"))
            .map(|rest| rest.split(['`', '{']).next().unwrap_or_default())
            .collect();
        assert!(listed.len() >= 15, "{listed:?}");
        for name in listed {
            let served = text.lines().any(|line| line.starts_with(&format!("merpati_{name}")));
            assert!(served, "the guide lists merpati_{name}, which is not served:\n{text}");
        }
        // Every blob refusal series exists from the start too.
        for kind in BLOB_REFUSAL_KINDS {
            let zero = format!("merpati_blob_refusals_total{{kind=\"{kind}\"}} 0");
            assert!(text.contains(&zero), "no {zero} in {text}");
        }
    }
}
