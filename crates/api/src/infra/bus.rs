//! The invalidation bus: what lets an instance answer from its own memory (a session, a cached
//! body) without asking Redis first, and still see every change made on any instance before the
//! changing request's response is sent.
//!
//! **Leases.** A per-instance cache entry may be used without a Redis round trip only under a
//! [`Lease`]: taken *before* the entry's truth was read from Redis, and held while (a) no change
//! of its [`Topic`] has been processed by this instance since, and (b) the bus is **live**.
//!
//! **Changes.** A change is announced by a Redis script that updates Redis' truth (an auth epoch,
//! a cache generation) *and* publishes `c <instance> <change> <slots>` on `{prefix}:bus` in the
//! same atomic step ([`ANNOUNCE`] ends every such script). Each instance's bus thread reads its
//! subscription in order, bumps the slots' counters (every lease on them is void from then on),
//! and acknowledges on the announcer's own channel (the announcer counts its own processing
//! directly). The script also returns every instance **registered** in the last [`REGISTERED_FOR`]
//! (`{prefix}:bus:instances`, a sorted set each heartbeat refreshes with Redis' clock), and the
//! announcing request waits for each of them to acknowledge, or [`ACK_WAIT`] at most. (Not for
//! `PUBLISH`'s count of receivers: an instance whose subscription died without its noticing is
//! not counted, yet may still believe itself live.)
//!
//! **Liveness.** Every [`HEARTBEAT`] the instance registers itself and publishes the time (its own
//! monotonic clock) on its own channel, which the same subscription connection reads: Redis
//! delivers a connection's messages in the order it executed the `PUBLISH`es, so when a heartbeat
//! sent at `t` has been read back, every change published before `t` has been processed. The bus is live while the
//! newest heartbeat read back was sent less than [`LIVE_FOR`] ago.
//!
//! **Why no request can miss a change.** Say a change's message was published at `t_c` and the
//! announcer answered once every registered instance acknowledged, or once [`ACK_WAIT`]
//! (> [`LIVE_FOR`]) had passed. An instance that acknowledged had voided its leases before. One
//! that did not has read back no heartbeat sent after `t_c` (it would have read the change
//! first), so from `t_c + LIVE_FOR` on — before the response — it is not live and its leases are
//! not used: its requests read Redis (and, behind that, Postgres) as without the bus. An instance
//! live at `t_c` registered itself less than `LIVE_FOR` before, so it was waited for. An instance
//! that was not subscribed at `t_c` took all its leases after its subscription started (earlier
//! ones are voided by that start), so after the change. A script that fails (Redis unreachable)
//! makes the announcer wait [`LIVE_FOR`] too: if Redis is down for everyone, every bus has
//! stopped being live by then.
//! The window left is the one the Redis truth already had: an announcer cut off from a Redis
//! that everyone else still reaches.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use tokio::sync::watch;
use uuid::Uuid;

/// How often the heartbeat is published.
pub const HEARTBEAT: Duration = Duration::from_millis(50);
/// The bus is live while its newest heartbeat read back is younger than this.
/// (Ten heartbeats: a loaded machine's delays do not switch the leases off.)
pub const LIVE_FOR: Duration = Duration::from_millis(500);
/// How long an announcer waits for acknowledgements at most (more than `LIVE_FOR`).
pub const ACK_WAIT: Duration = Duration::from_millis(600);
/// An instance whose last heartbeat registered less than this ago is waited for (more than
/// `LIVE_FOR`: clocks of two machines may run at slightly different rates).
pub const REGISTERED_FOR: Duration = Duration::from_millis(1000);
/// How long a registration is kept at all (older ones are trimmed by every heartbeat).
const REGISTRATION_KEPT_MS: u64 = 60_000;
/// The budget of each Redis call of the bus thread.
const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// The pause before the bus thread subscribes again after a failure.
const RETRY: Duration = Duration::from_millis(200);
/// Topics are spread over this many counters: a change voids the leases of its slot only.
const SLOTS: usize = 64;

/// The end of every script that announces a change; [`Announcement::append_to`] adds its key
/// (the registry, last of `KEYS`) and arguments (channel, message, window in ms: last of `ARGV`).
/// Publishes the change and returns the instances that must acknowledge it.
pub const ANNOUNCE: &str = r"
local n = #ARGV
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('PUBLISH', ARGV[n - 2], ARGV[n - 1])
return redis.call('ZRANGEBYSCORE', KEYS[#KEYS], now - tonumber(ARGV[n]), '+inf')
";

/// KEYS: the registry. ARGV: this instance, its channel, the heartbeat, the registrations' life (ms).
const HEARTBEAT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[4]))
return redis.call('PUBLISH', ARGV[2], ARGV[3])
";

/// What a change is about; leases on other slots survive it.
#[derive(Debug, Clone, Copy)]
pub enum Topic<'a> {
    /// A user's sessions or row.
    User(domain::UserId),
    /// A cache namespace.
    Cache(&'a str),
}

impl Topic<'_> {
    /// The topic's slot: the same in every instance and every build (announcers send slots, not
    /// topics), so a stable hash (FNV-1a), not `std`'s.
    fn slot(self) -> usize {
        let fnv = |seed: u8, bytes: &[u8]| {
            std::iter::once(seed)
                .chain(bytes.iter().copied())
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                })
        };
        let h = match self {
            Topic::User(id) => fnv(0, id.as_uuid().as_bytes()),
            Topic::Cache(ns) => fnv(1, ns.as_bytes()),
        };
        (h % SLOTS as u64) as usize
    }
}

/// Taken before reading an entry's truth from Redis; see the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    slot: usize,
    /// The subscription's number (every (re)subscription voids every lease).
    generation: u64,
    /// The slot's change counter.
    changes: u64,
}

#[derive(Clone)]
pub struct Bus(Arc<Inner>);

struct Inner {
    client: redis::Client,
    instance: String,
    /// `{prefix}:bus`: the changes every instance reads.
    channel: String,
    /// `{prefix}:bus:<instance>`: this instance's heartbeats and the acknowledgements of its changes.
    own: String,
    /// `{prefix}:bus:instances`: instance → Redis time (ms) of its last heartbeat.
    registry: String,
    started: Instant,
    /// Nanoseconds since `started` at which the newest heartbeat read back was sent (0: none).
    confirmed: AtomicU64,
    generation: AtomicU64,
    slots: [AtomicU64; SLOTS],
    next_change: AtomicU64,
    /// Set by [`Bus::leave`]: the bus thread stops registering this instance.
    leaving: std::sync::atomic::AtomicBool,
    /// The instances that acknowledged each of this instance's changes in flight.
    waiting: Mutex<HashMap<u64, watch::Sender<HashSet<String>>>>,
}

/// A change being announced: build the script's `PUBLISH` from [`channel`](Self::channel) and
/// [`message`](Self::message), then [`delivered`](Self::delivered) or [`failed`](Self::failed).
pub struct Announcement {
    bus: Bus,
    id: u64,
    message: String,
    acks: watch::Receiver<HashSet<String>>,
}

impl Bus {
    /// A bus over `redis_url` whose thread runs until the last clone is dropped.
    pub fn start(redis_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let bus = Self::new(redis::Client::open(redis_url)?, prefix);
        let weak = Arc::downgrade(&bus.0);
        std::thread::Builder::new()
            .name("invalidation-bus".into())
            .spawn(
                move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(run(weak)),
                    Err(e) => tracing::error!(error = %e, "invalidation bus: no runtime; leases stay off"),
                },
            )?;
        Ok(bus)
    }

    /// A bus without its thread (what [`start`](Self::start) runs): never live until messages are
    /// fed to it by hand, as the unit tests do.
    fn new(client: redis::Client, prefix: &str) -> Self {
        let instance = Uuid::new_v4().simple().to_string();
        Self(Arc::new(Inner {
            client,
            channel: format!("{prefix}:bus"),
            own: format!("{prefix}:bus:{instance}"),
            registry: format!("{prefix}:bus:instances"),
            instance,
            started: Instant::now(),
            confirmed: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            next_change: AtomicU64::new(1),
            leaving: std::sync::atomic::AtomicBool::new(false),
            waiting: Mutex::new(HashMap::new()),
        }))
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.0.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// This instance's name on the bus (in the registry and in its acknowledgements).
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// Deregisters this instance when it stops for good (after its last request): from then on
    /// announcers do not wait for it. Without this, every change announced in the
    /// [`REGISTERED_FOR`] after an instance's exit would wait [`ACK_WAIT`] for it. Heartbeats stop
    /// first; one already in flight has had two heartbeat periods to land before the removal.
    pub async fn leave(&self) {
        self.0.leaving.store(true, Ordering::Release);
        tokio::time::sleep(HEARTBEAT * 2).await;
        let removed = async {
            let mut conn = timed("leave", self.0.client.get_multiplexed_async_connection()).await?;
            timed(
                "leave",
                redis::cmd("ZREM")
                    .arg(&self.0.registry)
                    .arg(&self.0.instance)
                    .query_async::<i64>(&mut conn),
            )
            .await
        };
        if let Err(e) = removed.await {
            tracing::warn!(error = %e, "invalidation bus: could not deregister; announcers wait for this instance for another second");
        }
    }

    /// Whether a heartbeat sent less than [`LIVE_FOR`] ago has been read back.
    pub fn live(&self) -> bool {
        let confirmed = self.0.confirmed.load(Ordering::Acquire);
        confirmed != 0 && self.now_nanos().saturating_sub(confirmed) < LIVE_FOR.as_nanos() as u64
    }

    /// A lease for an entry of `topic` whose truth is about to be read; `None` while not live.
    pub fn lease(&self, topic: Topic<'_>) -> Option<Lease> {
        if !self.live() {
            return None;
        }
        let slot = topic.slot();
        Some(Lease {
            slot,
            generation: self.0.generation.load(Ordering::Acquire),
            changes: self.0.slots[slot].load(Ordering::Acquire),
        })
    }

    /// Whether an entry leased with `lease` may be used without asking Redis.
    pub fn holds(&self, lease: &Lease) -> bool {
        self.live()
            && self.0.generation.load(Ordering::Acquire) == lease.generation
            && self.0.slots[lease.slot].load(Ordering::Acquire) == lease.changes
    }

    /// Starts announcing a change of `topics`.
    pub fn announce(&self, topics: &[Topic<'_>]) -> Announcement {
        let id = self.0.next_change.fetch_add(1, Ordering::Relaxed);
        let mut message = format!("c {} {id} ", self.0.instance);
        for (i, t) in topics.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(message, "{sep}{}", t.slot());
        }
        let (tx, acks) = watch::channel(HashSet::new());
        self.waiting().insert(id, tx);
        Announcement {
            bus: self.clone(),
            id,
            message,
            acks,
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Sender<HashSet<String>>>> {
        self.0.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One message of the subscription, in order.
    fn on_message(&self, payload: &str) -> Option<(String, String)> {
        let mut parts = payload.split(' ');
        match parts.next()? {
            "h" => {
                let sent: u64 = parts.next()?.parse().ok()?;
                self.0.confirmed.fetch_max(sent, Ordering::AcqRel);
                None
            }
            "c" => {
                let (from, change, slots) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
                for slot in slots.split(',').filter_map(|s| s.parse::<usize>().ok()) {
                    if let Some(counter) = self.0.slots.get(slot) {
                        counter.fetch_add(1, Ordering::AcqRel);
                    }
                }
                // This instance's own change: acknowledged here, without a round trip.
                if from == self.0.instance {
                    self.acknowledged(change.parse().ok()?, from);
                    return None;
                }
                Some((
                    format!("{}:{from}", self.0.channel),
                    format!("a {change} {}", self.0.instance),
                ))
            }
            "a" => {
                let change = parts.next()?.parse().ok()?;
                self.acknowledged(change, parts.next()?);
                None
            }
            _ => None,
        }
    }

    /// Instance `by` has processed this instance's change `change`.
    fn acknowledged(&self, change: u64, by: &str) {
        if let Some(tx) = self.waiting().get(&change) {
            tx.send_modify(|acked| {
                acked.insert(by.to_owned());
            });
        }
    }

    /// A new subscription: nothing leased before it is trusted (messages may have been missed).
    fn resubscribed(&self) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        self.0.confirmed.store(0, Ordering::Release);
    }
}

impl Announcement {
    /// Adds what [`ANNOUNCE`] reads to a script's invocation, after the script's own keys and
    /// arguments: the registry (last key), the channel, the message and the window (last
    /// arguments).
    pub fn append_to(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation
            .key(&self.bus.0.registry)
            .arg(&self.bus.0.channel)
            .arg(&self.message)
            .arg(REGISTERED_FOR.as_millis() as u64);
    }

    /// The script ran: wait until every instance it named has acknowledged (at most
    /// [`ACK_WAIT`]).
    pub async fn delivered(mut self, expected: Vec<String>) {
        let acked = tokio::time::timeout(
            ACK_WAIT,
            self.acks.wait_for(|acked| expected.iter().all(|i| acked.contains(i))),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !acked {
            let missing: Vec<&String> = {
                let acked = self.acks.borrow();
                expected.iter().filter(|i| !acked.contains(*i)).collect()
            };
            tracing::warn!(
                ?missing,
                "invalidation bus: not every instance acknowledged; their leases have lapsed"
            );
        }
    }

    /// The script did not run (Redis unreachable): wait until no bus that lost Redis too can be
    /// live any more.
    pub async fn failed(self) {
        tokio::time::sleep(LIVE_FOR).await;
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        self.bus.waiting().remove(&self.id);
    }
}

/// The bus thread: subscribe, read in order, acknowledge, heartbeat; again after any failure.
async fn run(weak: Weak<Inner>) {
    loop {
        let Some(bus) = weak.upgrade().map(Bus) else { return };
        if let Err(e) = subscription(&bus, &weak).await {
            tracing::debug!(error = %e, "invalidation bus: subscription ended; leases off until it is back");
        }
        bus.resubscribed();
        drop(bus);
        tokio::time::sleep(RETRY).await;
    }
}

async fn timed<T>(what: &str, f: impl Future<Output = redis::RedisResult<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("{what}: timeout"),
    }
}

/// One subscription's life; returns when it fails or the bus is dropped.
async fn subscription(bus: &Bus, weak: &Weak<Inner>) -> anyhow::Result<()> {
    let client = &bus.0.client;
    let mut pubsub = timed("subscribe", client.get_async_pubsub()).await?;
    timed("subscribe", pubsub.subscribe(&[&bus.0.channel, &bus.0.own])).await?;
    let publisher = timed("connect", client.get_multiplexed_async_connection()).await?;
    bus.resubscribed();
    let mut messages = pubsub.into_on_message();
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let own = bus.0.own.clone();
    let heartbeat = Arc::new(redis::Script::new(HEARTBEAT_SCRIPT));
    loop {
        tokio::select! {
            _ = beat.tick() => {
                if weak.strong_count() <= 1 {
                    // The last user is gone: no announcer should wait for this instance.
                    let mut conn = publisher.clone();
                    let _ = timed("leave", redis::cmd("ZREM").arg(&bus.0.registry).arg(&bus.0.instance).query_async::<i64>(&mut conn)).await;
                    return Ok(());
                }
                if bus.0.leaving.load(Ordering::Acquire) {
                    continue;
                }
                // Sent from a task of its own: reading goes on while it is in flight.
                let mut conn = publisher.clone();
                let (script, registry, instance, own) =
                    (heartbeat.clone(), bus.0.registry.clone(), bus.0.instance.clone(), own.clone());
                let sent = format!("h {}", bus.now_nanos());
                tokio::spawn(async move {
                    let mut call = script.key(registry);
                    call.arg(instance).arg(own).arg(sent).arg(REGISTRATION_KEPT_MS);
                    let _ = timed("heartbeat", call.invoke_async::<i64>(&mut conn)).await;
                });
            }
            msg = messages.next() => {
                let Some(msg) = msg else { anyhow::bail!("subscription closed") };
                let Ok(payload) = msg.get_payload::<String>() else { continue };
                if let Some((channel, ack)) = bus.on_message(&payload) {
                    let mut conn = publisher.clone();
                    tokio::spawn(async move {
                        let _ = timed("ack", redis::cmd("PUBLISH").arg(channel).arg(ack).query_async::<i64>(&mut conn)).await;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bus whose thread is not running (nothing is ever connected).
    fn idle() -> Bus {
        Bus::new(redis::Client::open("redis://127.0.0.1:1").unwrap(), "t")
    }

    fn live(bus: &Bus) {
        bus.resubscribed();
        let _ = bus.on_message(&format!("h {}", bus.now_nanos().max(1)));
    }

    #[test]
    fn a_lease_holds_until_a_change_of_its_slot_or_a_new_subscription() {
        let bus = idle();
        assert!(
            bus.lease(Topic::Cache("users")).is_none(),
            "not live before a heartbeat"
        );
        live(&bus);
        let user = domain::UserId::from(Uuid::new_v4());
        let lease = bus.lease(Topic::User(user)).unwrap();
        assert!(bus.holds(&lease));
        // Another slot's change leaves it alone.
        let other = (0..SLOTS).find(|&s| s != Topic::User(user).slot()).unwrap();
        let ack = bus.on_message(&format!("c peer 7 {other}"));
        assert_eq!(ack, Some(("t:bus:peer".to_owned(), format!("a 7 {}", bus.0.instance))));
        assert!(bus.holds(&lease));
        // Its own slot's change voids it.
        let _ = bus.on_message(&format!("c peer 8 {other},{}", Topic::User(user).slot()));
        assert!(!bus.holds(&lease));
        // A new subscription voids every lease, and the bus is not live until a heartbeat.
        let lease = bus.lease(Topic::User(user)).unwrap();
        bus.resubscribed();
        assert!(!bus.live());
        live(&bus);
        assert!(!bus.holds(&lease));
    }

    #[test]
    fn the_bus_stops_being_live_when_heartbeats_stop_coming_back() {
        let bus = idle();
        bus.resubscribed();
        let _ = bus.on_message(&format!("h {}", bus.now_nanos()));
        assert!(bus.live());
        std::thread::sleep(LIVE_FOR + Duration::from_millis(20));
        assert!(!bus.live(), "an old heartbeat does not keep it live");
        assert!(bus.lease(Topic::Cache("products")).is_none());
    }

    #[test]
    fn malformed_messages_are_ignored() {
        let bus = idle();
        for m in ["", "x", "h", "h nan", "c", "c a", "a", "a nan", "c a 1 99999"] {
            let _ = bus.on_message(m);
        }
        assert!(!bus.live());
    }

    #[tokio::test]
    async fn a_change_waits_for_every_expected_instance_by_name() {
        let bus = idle();
        let a = bus.announce(&[Topic::Cache("users")]);
        assert!(a.message.starts_with(&format!("c {} {} ", bus.0.instance, a.id)));
        let id = a.id;
        let _ = bus.on_message(&format!("a {id} peer-1"));
        let _ = bus.on_message(&format!("a {} peer-2", id + 1000));
        let _ = bus.on_message(&format!("a {id} peer-2"));
        let _ = bus.on_message(&format!("a {id} peer-1"));
        let started = Instant::now();
        a.delivered(vec!["peer-1".into(), "peer-2".into()]).await;
        assert!(started.elapsed() < ACK_WAIT, "both expected instances acknowledged");
        assert!(bus.waiting().is_empty(), "the waiter is gone with its announcement");
        // Its own message counts as its own acknowledgement (no reply is sent for it).
        let own = bus.announce(&[Topic::Cache("users")]);
        assert_eq!(bus.on_message(&own.message), None);
        let started = Instant::now();
        own.delivered(vec![bus.0.instance.clone()]).await;
        assert!(started.elapsed() < ACK_WAIT, "its own processing acknowledged it");
        // Two acknowledgements from one instance are not two instances.
        let b = bus.announce(&[Topic::Cache("users")]);
        let _ = bus.on_message(&format!("a {} peer-1", b.id));
        let _ = bus.on_message(&format!("a {} peer-1", b.id));
        let started = Instant::now();
        b.delivered(vec!["peer-1".into(), "peer-3".into()]).await;
        assert!(
            started.elapsed() >= ACK_WAIT,
            "without peer-3's acknowledgement it waits it out"
        );
    }
}
