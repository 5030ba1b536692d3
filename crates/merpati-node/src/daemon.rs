//! The daemon: wires the store, the engine, the network and the control API together and runs
//! them until shutdown.
//!
//! One task owns the [`Engine`] and handles, in priority order: shutdown, control requests,
//! envelopes from the network, envelopes fetched from our relays, finished delivery attempts,
//! a retry timer, a day-change check (a new day means new mailboxes to fetch) and the hourly
//! maintenance pass (also run at start). Every timestamp comes from one [`Clock`]. When the store
//! reports a failed flush the task stops at once: what it would act on may not be on disk.
//! Deliveries run as owned tasks, one batch of a contact's queue (up to 64 envelopes) per contact
//! at a time so a contact receives our messages in the order they were written, and at most
//! [`MAX_DELIVERIES_IN_FLIGHT`] batches overall. Each batch goes to the contact's node in one
//! exchange or, when that fails, into its mailboxes at its relays ([`relay_client`]). Envelopes
//! received together (a batch, a page fetched from a relay) are stored with one durable write,
//! and so are sends that were waiting together. The mailbox keys are recomputed at the next tick
//! after control requests (that reads every session), at once for a new contact or a new day.
//! One fetch task per relay of ours long-polls our mailboxes there.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use libp2p::{Multiaddr, PeerId};
use merpati_control::home::Home;
use merpati_control::identity_file::IdentityFile;
use merpati_control::protocol::method::{self, Method};
use merpati_control::protocol::{
    Event, Outcome, Request, RestoredNotice, StatusUpdate, TransferDirection, TransferUpdate,
};
use merpati_proto::Timestamp;
use merpati_proto::frame::MessageId;
use merpati_proto::wire::{Refusal, deliver};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::control::{self, Command};
use crate::engine::{AttemptResult, Engine, MailboxKeys, Me};
use crate::net;
use crate::ports::{self, Ports};
use crate::relay_client::{self, FetchReport, Fetched};
use crate::rpc;
use crate::store::keyring::KeyInfo;
use crate::store::{
    Change, Direction, Keyring, RequestId, SledStore, Status, Store, StoreError, StoredMessage, Transfer,
    TransferSide,
};
use crate::transfers::download::Downloaded;
use crate::transfers::serve::SpoolServer;
use crate::transfers::spool::Spool;
use crate::transfers::upload::Uploaded;
use crate::transfers::{Finished, Moved, Report, Transfers};

/// The most delivery attempts running at once.
pub const MAX_DELIVERIES_IN_FLIGHT: usize = 256;
/// How often due retries are looked for.
pub const RETRY_TICK: Duration = Duration::from_secs(1);
/// How old the storage key may get before it is replaced and destroyed (ms). Deleted session keys
/// are unrecoverable from the database files once the key that sealed them is gone.
pub const STORAGE_KEY_LIFETIME: u64 = Timestamp::DAY;
/// How often the maintenance pass runs (prekeys, session keys, the storage key); also at start.
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(3600);
/// How often the daemon checks whether the day changed, which changes the mailboxes it fetches.
pub const DAY_CHECK: Duration = Duration::from_secs(60);
/// After a contact's node could not be reached, how long its messages go straight to its relays
/// (unless it connects meanwhile): a dial to an offline node can take the whole dial timeout,
/// and a burst of messages should not pay it once each.
pub const SKIP_DIRECT_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// How many batches of fetched envelopes may wait for the engine.
const FETCHED_QUEUE: usize = 8;
/// The most control requests handled as one group (consecutive sends share one write).
const MAX_COMMANDS_AT_ONCE: usize = 64;

/// What the daemon needs to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The home directory.
    pub home: Home,
    /// Addresses to listen on; empty: TCP and QUIC on all interfaces, ports chosen by the OS.
    pub listen: Vec<Multiaddr>,
    /// Whether to find peers on the local network with mDNS.
    pub mdns: bool,
    /// Whether contacts are told when their messages were read.
    pub read_receipts: bool,
    /// Where every timestamp comes from.
    pub clock: Clock,
}

/// What a started daemon prints once it is ready (one JSON line on stdout).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ready {
    /// The node's libp2p peer id.
    pub peer_id: String,
    /// Full listen addresses, with `/p2p/<peer id>`.
    pub listen: Vec<String>,
    /// The control socket's path.
    pub control: String,
}

/// Fresh randomness from the operating system, expanded by ChaCha20. Fails only where the
/// operating system has no randomness to give, where the node cannot run.
pub fn os_rng() -> std::io::Result<ChaCha20Rng> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut *seed)
        .map_err(|e| std::io::Error::other(format!("the operating system gives no randomness: {e}")))?;
    Ok(ChaCha20Rng::from_seed(*seed))
}

/// Runs the daemon until `shutdown` is cancelled; `ready` receives the startup line.
pub async fn run(
    options: Options,
    shutdown: CancellationToken,
    ready: impl FnOnce(&Ready),
) -> anyhow::Result<()> {
    let home = options.home;
    let clock = options.clock;
    if clock.offset_ms() != 0 {
        tracing::warn!(
            offset_ms = clock.offset_ms(),
            "the clock is shifted ({})",
            crate::clock::OFFSET_VARIABLE
        );
    }
    home.create_dir().context("cannot create the home directory")?;
    let _lock = crate::lock::HomeLock::acquire(&home.lock_file())?;
    let identity = IdentityFile::load(&home.identity_file())?;
    let me = Me::from(identity);
    let db = home.database_dir();
    std::fs::create_dir_all(&db)
        .with_context(|| format!("cannot create the database directory {}", db.display()))?;
    let keyring = Keyring::open_or_create(SledStore::key_file(&db), &mut os_rng()?)
        .with_context(|| format!("cannot open the database's key file in {}", db.display()))?;
    let store = SledStore::open(&db, keyring)
        .with_context(|| format!("cannot open the database in {}", db.display()))?;
    let new_key = || libp2p::identity::Keypair::generate_ed25519().to_protobuf_encoding().unwrap_or_default();
    let mut engine = Engine::start(store, me, new_key, clock.now(), os_rng()?)?;
    engine.set_read_receipts(options.read_receipts);
    let keypair = libp2p::identity::Keypair::from_protobuf_encoding(engine.profile().node_key.as_bytes())
        .context("the stored node key is damaged")?;

    let config = net::Config::default().with_mdns(options.mdns);
    let wanted =
        if options.listen.is_empty() { config.listen_addrs().to_vec() } else { options.listen.clone() };
    // A port given explicitly is ours alone, or the start fails with its address.
    ports::check_free(&options.listen)?;
    let ports_file = home.dir().join("ports");
    let remembered = Ports::load(&ports_file);
    let mut preferred = ports::listen_plan(&options.listen, config.listen_addrs(), &remembered);
    if let Err(e) = ports::check_free(&preferred) {
        tracing::warn!("{e}; listening on new ports");
        preferred = wanted.clone();
    }
    // This node serves its own files to their readers (over direct connections).
    let spool = Spool::new(home.dir().join("blobs"));
    let server = SpoolServer::new(&keypair.public().to_peer_id(), spool.clone(), clock.clone());
    let extras = || net::Extras { blob_server: Some(Arc::new(server.clone())), ..net::Extras::default() };
    let spawned = net::spawn_with(
        config.clone().with_listen_addrs(preferred.clone()),
        keypair.clone(),
        extras(),
        shutdown.child_token(),
    )
    .await;
    let (net, inbound, net_task) = match spawned {
        Ok(spawned) => spawned,
        // The remembered ports are taken: take fresh ones (contacts learn them when we write).
        Err(net::NetError::Listen { .. }) if preferred != wanted => {
            tracing::warn!("the ports of the last run are taken; listening on new ones");
            net::spawn_with(config.with_listen_addrs(wanted), keypair, extras(), shutdown.child_token())
                .await?
        }
        Err(e) => return Err(e.into()),
    };
    Ports::of(&net.listen_addrs().await).save(&ports_file);
    let listener = control::bind(&home.control_socket())
        .with_context(|| format!("cannot create the control socket {}", home.control_socket().display()))?;
    let (commands_tx, commands) = mpsc::channel(64);
    let (events, _) = broadcast::channel(1024);
    let control_task =
        tokio::spawn(control::serve(listener, net.clone(), commands_tx, events.clone(), shutdown.clone()));

    let listen = net.listen_addrs().await;
    ready(&Ready {
        peer_id: net.local_peer_id().to_string(),
        listen: listen.iter().map(ToString::to_string).collect(),
        control: home.control_socket().display().to_string(),
    });

    let (transfers, transfer_reports) = Transfers::new(spool, server, net.clone(), clock.clone());
    let (mailbox_keys, _) = watch::channel(Arc::new(MailboxKeys::default()));
    let (fetched_tx, fetched) = mpsc::channel(FETCHED_QUEUE);
    let mut actor = Actor {
        engine,
        home: home.clone(),
        clock,
        keys_day: 0,
        keys_due: false,
        net,
        events,
        deliveries: JoinSet::new(),
        busy: HashSet::new(),
        renamed: HashMap::new(),
        unreachable: HashMap::new(),
        mailbox_keys,
        fetched_tx,
        fetchers: HashMap::new(),
        fetch_tasks: JoinSet::new(),
        transfers,
    };
    actor.engine.set_node_info(
        actor.net.local_peer_id().to_bytes(),
        listen.iter().map(|addr| addr.to_vec()).collect(),
    );
    // Before anything is sealed or fetched: every session restored and its fresh sending
    // sub-epoch on disk, prekeys and keys as old as the clock says.
    actor.maintain();
    actor.refresh_keys();
    actor.sync_relays().await;
    actor.resume_transfers();
    let outcome = actor.run(commands, inbound, fetched, transfer_reports, shutdown.clone()).await;
    actor.transfers.shutdown().await;
    actor.deliveries.shutdown().await;
    actor.fetch_tasks.shutdown().await;
    shutdown.cancel();
    let _ = control_task.await;
    let _ = net_task.await;
    let _ = std::fs::remove_file(home.control_socket());
    outcome
}

struct Actor {
    engine: Engine<SledStore>,
    /// The home directory (backups read its identity and config files).
    home: Home,
    clock: Clock,
    /// The day the mailbox keys were last computed for.
    keys_day: u64,
    /// Whether the mailbox keys are to be recomputed at the next tick.
    keys_due: bool,
    net: net::Handle,
    events: broadcast::Sender<Event>,
    deliveries: JoinSet<(String, relay_client::BatchDelivery)>,
    /// Contacts with a batch in flight.
    busy: HashSet<String>,
    /// Contacts renamed while a batch to them was in flight: the old name, and the new.
    renamed: HashMap<String, String>,
    /// Contacts whose node could not be reached directly, and when.
    unreachable: HashMap<String, Instant>,
    /// The keys of all our mailboxes, for the fetch tasks.
    mailbox_keys: watch::Sender<Arc<MailboxKeys>>,
    fetched_tx: mpsc::Sender<FetchReport>,
    /// One fetch task per relay of ours, stopped through its token.
    fetchers: HashMap<libp2p::Multiaddr, CancellationToken>,
    fetch_tasks: JoinSet<()>,
    /// File uploads and downloads.
    transfers: Transfers,
}

impl Actor {
    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: net::Inbound,
        mut fetched: mpsc::Receiver<FetchReport>,
        mut transfer_reports: mpsc::Receiver<Report>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(RETRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Both have just run at start: their first ticks come one period later.
        let mut maintenance =
            tokio::time::interval_at(tokio::time::Instant::now() + MAINTENANCE_EVERY, MAINTENANCE_EVERY);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut day_check = tokio::time::interval_at(tokio::time::Instant::now() + DAY_CHECK, DAY_CHECK);
        day_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A write that may not be on disk must not be acted on: stop, and let the next start
            // go on from what is durable.
            if let Some(error) = self.engine.store().failure() {
                tracing::error!("stopping: the database could not be written to disk: {error}");
                return Err(anyhow::anyhow!(
                    "the database could not be written to disk ({error}); nothing that was not saved has been sent or acknowledged"
                ));
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(command) = commands.recv() => {
                    // Requests that queued up while the last ones were handled go together, so
                    // sends that arrive at once share one durable write.
                    let mut ready = vec![command];
                    while ready.len() < MAX_COMMANDS_AT_ONCE {
                        match commands.try_recv() {
                            Ok(command) => ready.push(command),
                            Err(_) => break,
                        }
                    }
                    self.on_commands(ready).await;
                }
                Some(event) = inbound.recv() => self.on_network(event),
                Some(report) = fetched.recv() => match report {
                    FetchReport::Fetched(batch) => self.on_fetched(batch),
                    FetchReport::Swept { relay, through } => self.on_swept(relay, through),
                },
                Some(_) = self.fetch_tasks.join_next(), if !self.fetch_tasks.is_empty() => {}
                Some(report) = transfer_reports.recv() => {
                    if let Some(moved) = self.transfers.on_report(report) {
                        self.publish_transfer(moved);
                    }
                }
                Some(finished) = self.transfers.next_finished(), if !self.transfers.is_idle() => {
                    self.transfer_finished(finished);
                }
                Some(done) = self.deliveries.join_next(), if !self.deliveries.is_empty() => {
                    if let Ok((contact, delivery)) = done {
                        self.batch_finished(contact, delivery);
                    }
                }
                _ = tick.tick() => {
                    if self.keys_due {
                        self.refresh_keys();
                    }
                    self.kick(None);
                }
                _ = day_check.tick() => {
                    if self.clock.now().day() != self.keys_day {
                        self.refresh_keys();
                    }
                }
                _ = maintenance.tick() => {
                    self.maintain();
                    self.refresh_keys();
                }
            }
        }
        Ok(())
    }

    /// Answers control requests, in order: consecutive sends with one write for all.
    async fn on_commands(&mut self, commands: Vec<Command>) {
        // Answers to deletions, held until the one storage key rotation that shreds what they
        // all removed: deletions that arrive together cost one rotation.
        let mut shredded = Vec::new();
        let mut commands = commands.into_iter().peekable();
        while let Some(command) = commands.next() {
            let now = self.clock.now();
            if rpc::is_send(&command.request) {
                let mut sends = vec![command];
                while let Some(next) = commands.next_if(|c| rpc::is_send(&c.request)) {
                    sends.push(next);
                }
                let requests: Vec<&Request> = sends.iter().map(|c| &c.request).collect();
                let responses = rpc::handle_sends(&mut self.engine, &requests, now);
                for (command, (response, queued)) in sends.into_iter().zip(responses) {
                    let _ = command.reply.send(response);
                    // Followers see what the user wrote too, as soon as it is queued.
                    if let Some(message) = queued {
                        self.publish_message(&message);
                    }
                }
            } else if command.request.method == method::Backup::NAME {
                let response = rpc::backup(&self.engine, &self.home, &command.request, now);
                let _ = command.reply.send(response);
            } else {
                let spool = self.transfers.spool().clone();
                let response = rpc::handle(&mut self.engine, &self.net, &spool, &command.request, now).await;
                // What a deletion removed is shredded before it is reported done.
                if rpc::shreds(&command.request) && matches!(response.outcome, Outcome::Result(_)) {
                    shredded.push((command.reply, response));
                } else {
                    let _ = command.reply.send(response);
                }
                // Accepting a request (or adding its sender) opened what they wrote; a file sent
                // is announced the same way.
                for message in self.engine.take_opened() {
                    self.publish_message(&message);
                    self.start_transfer(message.id);
                }
                // By the names as stored, whatever case the user typed.
                for (old, new) in self.engine.take_renamed() {
                    self.follow_rename(old, new);
                }
                if rpc::changes_relays(&command.request) {
                    self.sync_relays().await;
                }
            }
        }
        if !shredded.is_empty() {
            // Files of deleted messages leave the spool, and their transfers stop.
            self.sweep_transfers();
            self.shred_deleted_records();
            for (reply, response) in shredded {
                let _ = reply.send(response);
            }
        }
        // A send may have started a session, whose mailboxes we then fetch; the keys are
        // recomputed at the next tick (reading every session each time would make a send cost
        // what the node's contacts number).
        self.keys_due = true;
        self.kick(None);
    }

    fn on_network(&mut self, event: net::Event) {
        match event {
            net::Event::Delivery { peer, request, reply } => {
                let mut responses = self.receive(Some(peer), &[request.envelope]);
                reply.send(responses.pop().unwrap_or(deliver::Response::Refused(Refusal::Internal)));
            }
            net::Event::Deliveries { peer, batch, reply } => {
                reply.send(self.receive(Some(peer), &batch.envelopes));
            }
            net::Event::PeerConnected(peer) => {
                let bytes = peer.to_bytes();
                if let Ok(contacts) = self.engine.store().contacts() {
                    for contact in contacts.into_iter().filter(|c| c.peer_id == bytes) {
                        self.unreachable.remove(&contact.name);
                        self.kick(Some(&contact.name));
                    }
                }
            }
            // Fetch tasks are already polling; a reservation needs nothing more.
            net::Event::RelayReserved(_) => {}
            net::Event::Discovered { peer, addrs } => {
                let bytes: Vec<Vec<u8>> = addrs.iter().map(|a| a.to_vec()).collect();
                let net = self.net.clone();
                // Best effort: a stopped network has nothing to add them to.
                tokio::spawn(async move { net.add_addresses(peer, addrs).await });
                match tokio::task::block_in_place(|| self.engine.learn_addresses(&peer.to_bytes(), bytes)) {
                    // A contact just showed up on the local network: try its queued messages now.
                    Ok(Some(contact)) => {
                        self.unreachable.remove(&contact);
                        self.kick(Some(&contact));
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("cannot record a discovered address: {e}"),
                }
            }
        }
    }

    /// Processes envelopes fetched from a relay like delivered ones, and tells the fetch task
    /// which it may delete: all but those the node failed to store.
    /// Keeps a relay's sweep progress, so the next start does not sweep those days there again.
    fn on_swept(&mut self, relay: libp2p::PeerId, through: u64) {
        let change = Change::NoteSwept { relay: relay.to_bytes(), through };
        if let Err(e) = tokio::task::block_in_place(|| self.engine.store().apply(&[change])) {
            tracing::warn!(%relay, "cannot record the sweep's progress: {e}");
        }
    }

    fn on_fetched(&mut self, batch: Fetched) {
        let envelopes: Vec<&[u8]> = batch.items.iter().map(|item| item.envelope.as_slice()).collect();
        let responses = self.receive(None, &envelopes);
        let processed = batch
            .items
            .iter()
            .zip(responses)
            .filter(|(_, response)| *response != deliver::Response::Refused(Refusal::Internal))
            .map(|(item, _)| item.id)
            .collect();
        // The fetch task may have stopped; the envelopes are then fetched again next time.
        let _ = batch.done.send(processed);
    }

    /// Stores envelopes received together (from `peer`'s node, or fetched from a relay with
    /// `None`) with one durable write, publishes what they changed, and returns one answer per
    /// envelope: `Refused(Internal)` for all when the store failed, so none is acknowledged.
    fn receive<B: AsRef<[u8]>>(&mut self, peer: Option<PeerId>, envelopes: &[B]) -> Vec<deliver::Response> {
        let from = peer.map(|peer| peer.to_bytes());
        let now = self.clock.now();
        let received =
            tokio::task::block_in_place(|| self.engine.receive_batch(from.as_deref(), envelopes, now));
        let received = match received {
            Ok(received) => received,
            Err(e) => {
                tracing::error!("cannot store received envelopes: {e}");
                return vec![deliver::Response::Refused(Refusal::Internal); envelopes.len()];
            }
        };
        let mut responses = Vec::with_capacity(received.len());
        let mut new_session = false;
        for received in received {
            if let Some(message) = &received.message {
                self.publish_message(message);
                self.start_transfer(message.id);
            }
            for (id, status) in received.statuses {
                self.publish_status(id, status, None);
            }
            new_session |= received.new_session;
            if let Some(request) = received.request {
                self.publish_request(request);
            }
            if let Some(contact) = &received.restored {
                self.publish_restored(contact);
            }
            // Every envelope gets an answer from the engine; none would be an engine bug.
            responses.push(received.response.unwrap_or(deliver::Response::Refused(Refusal::Internal)));
        }
        if new_session {
            self.refresh_keys();
        }
        self.kick(None);
        responses
    }

    /// Recomputes the keys of our mailboxes and tells the fetch tasks if they changed.
    fn refresh_keys(&mut self) {
        let now = self.clock.now();
        self.keys_day = now.day();
        self.keys_due = false;
        let keys = tokio::task::block_in_place(|| self.engine.mailbox_keys(now));
        self.mailbox_keys.send_if_modified(|current| {
            if **current == keys {
                return false;
            }
            *current = Arc::new(keys);
            true
        });
    }

    /// Makes the network keep reservations on exactly our relays, and runs one fetch task per
    /// relay.
    async fn sync_relays(&mut self) {
        let relays: Vec<libp2p::Multiaddr> = self
            .engine
            .relays()
            .into_iter()
            .filter_map(|addr| libp2p::Multiaddr::try_from(addr).ok())
            .collect();
        if self.net.set_relays(relays.clone()).await.is_err() {
            return;
        }
        self.fetchers.retain(|relay, stop| {
            let keep = relays.contains(relay);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for relay in relays {
            if self.fetchers.contains_key(&relay) {
                continue;
            }
            let stop = CancellationToken::new();
            self.fetchers.insert(relay.clone(), stop.clone());
            let swept_through = net::peer_of(&relay)
                .and_then(|peer| self.engine.store().swept_through(&peer.to_bytes()).ok().flatten());
            let task = relay_client::fetch_loop(
                self.net.clone(),
                relay,
                self.mailbox_keys.subscribe(),
                swept_through,
                self.fetched_tx.clone(),
                stop,
            );
            self.fetch_tasks.spawn(task);
        }
    }

    /// The maintenance pass: the engine's (prekeys, sessions), then the storage key, whose
    /// rotation re-seals what the engine just wrote. A failed step is logged and tried again at
    /// the next pass.
    fn maintain(&mut self) {
        let now = self.clock.now();
        match tokio::task::block_in_place(|| self.engine.maintain(now)) {
            Ok(done) => {
                tracing::debug!(?done, "maintenance pass");
                for (id, reason) in done.expired {
                    self.publish_status(id, Status::Failed, Some(reason));
                }
            }
            Err(e) => tracing::error!("maintenance failed: {e}"),
        }
        let store = self.engine.store();
        match tokio::task::block_in_place(|| rotate_storage_key_if_due(store, now)) {
            Ok(Some(key)) => {
                tracing::info!(key = key.id, "storage key rotated; the previous one is destroyed")
            }
            Ok(None) => {}
            Err(e) => tracing::error!("cannot rotate the storage key: {e}"),
        }
    }

    /// Replaces the storage key now, after sealed records were deleted (a contact's sessions,
    /// messages with their conversation's old content key): sled does not erase replaced or
    /// deleted values, and once the key that sealed them is destroyed the copies it left cannot
    /// be opened. Logged on failure; the store keeps a flag until a rotation completes, so the
    /// next maintenance pass (hourly, and at start) tries again.
    fn shred_deleted_records(&mut self) {
        let store = self.engine.store();
        let rotated = tokio::task::block_in_place(|| {
            let mut rng = os_rng()
                .map_err(|source| StoreError::Io { path: store.keyring().path().to_owned(), source })?;
            store.rotate_storage_key(&mut rng)
        });
        match rotated {
            Ok(key) => tracing::info!(key = key.id, "storage key replaced after a deletion"),
            Err(e) => tracing::error!("cannot replace the storage key after a deletion: {e}"),
        }
    }

    /// Tells followers that `contact`'s node was restored from a backup.
    fn publish_restored(&self, contact: &str) {
        match self.engine.store().contact(contact) {
            Ok(Some(record)) => {
                let at = record.restored_at.map_or(0, |t| t.millis());
                tracing::info!(
                    "{contact} restored from a backup; the conversation moved to their new session"
                );
                let _ = self.events.send(Event::Restored(RestoredNotice { contact: record.name, at }));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot read a contact to announce their restore: {e}"),
        }
    }

    fn publish_request(&self, id: RequestId) {
        match self.engine.store().request(&id) {
            Ok(Some(request)) => {
                let _ = self.events.send(Event::Request(rpc::request_view(&request)));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot read a contact request to announce it: {e}"),
        }
    }

    /// Carries a renamed contact's delivery state over to the new name: a batch in flight
    /// under the old one still holds the contact, so no second batch starts beside it.
    fn follow_rename(&mut self, old: String, new: String) {
        if self.busy.remove(&old) {
            self.busy.insert(new.clone());
            // Renamed twice while one batch is out: the batch's name now leads to the newest.
            let mut carried = false;
            for target in self.renamed.values_mut().filter(|target| **target == old) {
                target.clone_from(&new);
                carried = true;
            }
            if !carried {
                self.renamed.insert(old.clone(), new.clone());
            }
        }
        if let Some(since) = self.unreachable.remove(&old) {
            self.unreachable.insert(new, since);
        }
    }

    /// Records how a contact's batch went, and sends its next one at once if this one got
    /// through.
    fn batch_finished(&mut self, contact: String, delivery: relay_client::BatchDelivery) {
        // A batch started before a rename finishes under the contact's new name.
        let contact = self.renamed.remove(&contact).unwrap_or(contact);
        self.busy.remove(&contact);
        let taken = |result: &AttemptResult| {
            matches!(result, AttemptResult::Accepted)
                || matches!(result, AttemptResult::Deposited { accepted, .. } if *accepted > 0)
        };
        let reached = delivery
            .results
            .iter()
            .any(|(_, result)| matches!(result, AttemptResult::Accepted | AttemptResult::Refused(_)));
        if reached {
            self.unreachable.remove(&contact);
        } else if delivery.direct_failed {
            // Only a real failed try starts the wait, so the node is tried again once it is over.
            self.unreachable.insert(contact.clone(), Instant::now());
        }
        // Every envelope tried was taken: what follows them is not held back by a backoff.
        let progress =
            !delivery.results.is_empty() && delivery.results.iter().all(|(_, result)| taken(result));
        let now = self.clock.now();
        match tokio::task::block_in_place(|| self.engine.attempts_finished(&delivery.results, now)) {
            Ok(updates) => {
                for (id, update) in updates {
                    if let Some((status, reason)) = update {
                        self.publish_status(id, status, reason);
                    }
                }
            }
            Err(e) => tracing::error!("cannot record delivery results: {e}"),
        }
        // The next batch to this contact goes right away after a batch that went through; one
        // with a refusal waits for the tick, so the refused head keeps its backoff.
        if progress {
            self.kick(Some(&contact));
        }
    }

    /// Starts the due deliveries (all of one contact's when it just came online): one batch per
    /// contact at a time, so a contact receives our messages in the order they were written.
    fn kick(&mut self, contact: Option<&str>) {
        if self.engine.store().failure().is_some() {
            return;
        }
        // Only the batches that can start now: the engine reads no envelope for the others.
        let free = MAX_DELIVERIES_IN_FLIGHT.saturating_sub(self.busy.len());
        let busy = &self.busy;
        let now = self.clock.now();
        let batches = match self.engine.due_batches(now, contact, free, |c| busy.contains(c)) {
            Ok(batches) => batches,
            Err(e) => {
                tracing::error!("cannot read the outbox: {e}");
                return;
            }
        };
        for batch in batches {
            let Some(first) = batch.first() else { continue };
            if self.busy.len() >= MAX_DELIVERIES_IN_FLIGHT || self.busy.contains(&first.contact) {
                continue;
            }
            let contact = first.contact.clone();
            self.busy.insert(contact.clone());
            let net = self.net.clone();
            let skip_direct = self
                .unreachable
                .get(&contact)
                .is_some_and(|since| since.elapsed() < SKIP_DIRECT_AFTER_FAILURE);
            self.deliveries.spawn(async move {
                let delivery = relay_client::deliver_batch(&net, &batch, skip_direct).await;
                (contact, delivery)
            });
        }
    }

    /// Starts what the file transfer of message `id` still needs, if it has one.
    fn start_transfer(&mut self, id: MessageId) {
        let store = self.engine.store();
        let found = tokio::task::block_in_place(|| {
            let Some(transfer) = store.transfer(&id)? else { return Ok(None) };
            let here = store.file_info(&id)?.is_some_and(|info| info.here);
            // A file we receive may be had from its sender's node, at its last known addresses.
            let message = store.message(&id)?;
            let sender = match message.filter(|m| m.direction == Direction::In) {
                Some(message) => store.contact(&message.contact)?.and_then(|contact| {
                    let peer = PeerId::from_bytes(&contact.peer_id).ok()?;
                    let addrs =
                        contact.addrs.iter().filter_map(|a| Multiaddr::try_from(a.clone()).ok()).collect();
                    Some((peer, addrs))
                }),
                None => None,
            };
            Ok::<_, StoreError>(Some((transfer, here, sender)))
        });
        match found {
            Ok(Some((transfer, here, sender))) => {
                if let Some(started) = self.transfers.start(id, &transfer, here, sender) {
                    self.publish_transfer(started);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot read a file's transfer: {e}"),
        }
    }

    /// Resumes every transfer not finished (at start), after removing from the spool what no
    /// message refers to.
    fn resume_transfers(&mut self) {
        let Some(kept) = self.sweep_transfers() else { return };
        for (id, _) in kept {
            self.start_transfer(id);
        }
    }

    /// Stops the transfers of deleted messages and clears their files from the spool; returns
    /// the transfers kept.
    fn sweep_transfers(&mut self) -> Option<Vec<(MessageId, Transfer)>> {
        match tokio::task::block_in_place(|| self.engine.store().transfers()) {
            Ok(kept) => {
                self.transfers.sweep(&kept);
                Some(kept)
            }
            Err(e) => {
                tracing::warn!("cannot read the file transfers: {e}");
                None
            }
        }
    }

    /// Records what a transfer task finished.
    fn transfer_finished(&mut self, finished: Finished) {
        let store = self.engine.store();
        let update = |id: &MessageId, edit: &dyn Fn(&mut Transfer)| -> Result<bool, StoreError> {
            let Some(mut transfer) = store.transfer(id)? else { return Ok(false) };
            edit(&mut transfer);
            store.apply(&[Change::PutTransfer { id: *id, transfer }])?;
            Ok(true)
        };
        let (id, result) = match finished {
            Finished::Upload { message, relay, outcome: Uploaded::Done } => {
                tracing::info!(%relay, "a file is uploaded to the relay");
                let relay = serde_bytes::ByteBuf::from(relay.to_bytes());
                let result = tokio::task::block_in_place(|| {
                    update(&message, &|transfer| {
                        if let TransferSide::Upload { done_at, .. } = &mut transfer.side
                            && !done_at.contains(&relay)
                        {
                            done_at.push(relay.clone());
                        }
                    })
                });
                (message, result)
            }
            Finished::Upload { message, relay, outcome: Uploaded::Refused(refusal) } => {
                tracing::warn!(%relay, "the relay refused a file: {refusal}");
                let why = format!("relay {relay} refused it: {}", upload_refusal(refusal));
                let relay = serde_bytes::ByteBuf::from(relay.to_bytes());
                let result = tokio::task::block_in_place(|| {
                    update(&message, &|transfer| {
                        if let TransferSide::Upload { refused, .. } = &mut transfer.side
                            && !refused.iter().any(|(r, _)| *r == relay)
                        {
                            refused.push((relay.clone(), why.clone()));
                        }
                    })
                });
                (message, result)
            }
            Finished::Download { message, outcome: Downloaded::Done } => {
                let result = tokio::task::block_in_place(|| {
                    let Some(mut info) = store.file_info(&message)? else { return Ok(false) };
                    info.here = true;
                    store.apply(&[Change::PutFile { id: message, info, data: None }])?;
                    Ok(true)
                });
                (message, result)
            }
            Finished::Download { message, outcome: Downloaded::Failed(why) } => {
                tracing::warn!("a file could not be fetched: {why}");
                let result = tokio::task::block_in_place(|| {
                    update(&message, &|transfer| {
                        transfer.side = TransferSide::Download { failed: Some(why.clone()) }
                    })
                });
                (message, result)
            }
            Finished::Upload { outcome: Uploaded::Cancelled, .. }
            | Finished::Download { outcome: Downloaded::Cancelled, .. } => return,
        };
        match result {
            Ok(true) => {
                if let Ok(message) = self.engine.message(&id) {
                    self.publish_message(&message);
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!("cannot record a file transfer: {e}"),
        }
    }

    fn publish_transfer(&self, moved: Moved) {
        let update = TransferUpdate {
            id: rpc::message_id(&moved.message),
            direction: if moved.up { TransferDirection::Up } else { TransferDirection::Down },
            done: moved.done,
            size: moved.size,
            waiting: moved.waiting,
        };
        let _ = self.events.send(Event::Transfer(update));
    }

    fn publish_message(&self, message: &StoredMessage) {
        // No subscriber is not an error: notifications are a convenience over the store.
        let _ = self.events.send(Event::Message(rpc::message_view(self.engine.store(), message)));
    }

    fn publish_status(&self, id: MessageId, status: Status, reason: Option<String>) {
        let update = StatusUpdate {
            id: rpc::message_id(&id),
            status: rpc::status_of(status),
            stored: rpc::stored_of(status),
            reason,
        };
        let _ = self.events.send(Event::Status(update));
    }
}

/// A relay's refusal of our file, as the sender reads it.
fn upload_refusal(refusal: Refusal) -> String {
    match refusal {
        Refusal::TooLarge { max } => format!(
            "it is larger than the {:.0} MiB it keeps for one user; it goes only directly (while both nodes are up) or through another relay",
            f64::from(max) / 1_048_576.0
        ),
        Refusal::Unauthorized => "another file there has the same id; send it again".to_owned(),
        Refusal::UnknownBlob => "it expired there before the upload ended".to_owned(),
        other => other.to_string(),
    }
}

/// Replaces the storage key once it is [`STORAGE_KEY_LIFETIME`] old, or at once if a deletion is
/// still to be shredded; returns the new key.
pub fn rotate_storage_key_if_due(store: &SledStore, now: Timestamp) -> Result<Option<KeyInfo>, StoreError> {
    // A deletion whose shredding did not complete (a crash, a failed rotation) is due at once.
    if now.since(store.keyring().current().created_at) < STORAGE_KEY_LIFETIME && !store.shred_pending()? {
        return Ok(None);
    }
    let mut rng =
        os_rng().map_err(|source| StoreError::Io { path: store.keyring().path().to_owned(), source })?;
    store.rotate_storage_key(&mut rng).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storage_key_is_replaced_once_a_day_old() {
        let dir = tempfile::tempdir().unwrap();
        let keyring =
            Keyring::open_or_create(SledStore::key_file(dir.path()), &mut os_rng().unwrap()).unwrap();
        let store = SledStore::open(dir.path(), keyring).unwrap();
        let first = store.keyring().current();
        let now = Clock::system().now();
        assert!(rotate_storage_key_if_due(&store, now).unwrap().is_none());
        let later = now.plus(STORAGE_KEY_LIFETIME + 1);
        let second = rotate_storage_key_if_due(&store, later).unwrap().unwrap();
        assert_ne!(second.id, first.id);
        assert_eq!(store.keyring().keys().iter().map(|k| k.id).collect::<Vec<_>>(), vec![second.id]);

        // A deletion not yet shredded (the daemon stopped, or the rotation failed) is due at once.
        store.apply(&[Change::ClearConversation("bob".into())]).unwrap();
        assert!(store.shred_pending().unwrap());
        let now = Clock::system().now();
        let third = rotate_storage_key_if_due(&store, now).unwrap().expect("rotated although just made");
        assert_ne!(third.id, second.id);
        assert!(!store.shred_pending().unwrap(), "the rotation clears the flag");
        assert!(rotate_storage_key_if_due(&store, now).unwrap().is_none());
    }
}
