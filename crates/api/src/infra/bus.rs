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
//! same atomic step; `PUBLISH` answers how many instances received it. Each instance's bus thread
//! reads its subscription in order, bumps the slots' counters (every lease on them is void from
//! then on), and acknowledges on the announcer's own channel (the announcer counts its own
//! processing directly). The announcing request waits for as many acknowledgements as there were
//! receivers, or [`ACK_WAIT`] at most.
//!
//! **Liveness.** Every [`HEARTBEAT`] the instance publishes the time (its own monotonic clock) on
//! its own channel, which the same subscription connection reads: Redis delivers a connection's
//! messages in the order it executed the `PUBLISH`es, so when a heartbeat sent at `t` has been
//! read back, every change published before `t` has been processed. The bus is live while the
//! newest heartbeat read back was sent less than [`LIVE_FOR`] ago.
//!
//! **Why no request can miss a change.** Say a change's message was published at `t_c` and the
//! announcer answered once all receivers acknowledged, or once [`ACK_WAIT`] (> [`LIVE_FOR`]) had
//! passed. An instance that acknowledged had voided its leases before. One that did not has read
//! back no heartbeat sent after `t_c` (it would have read the change first), so from
//! `t_c + LIVE_FOR` on — before the response — it is not live and its leases are not used: its
//! requests read Redis (and, behind that, Postgres) as without the bus. An instance that was not
//! subscribed at `t_c` took all its leases before its subscription started (they are voided by
//! the subscription's start). A script that fails (Redis unreachable) makes the announcer wait
//! [`LIVE_FOR`] too: if Redis is down for everyone, every bus has stopped being live by then.
//! The window left is the one the Redis truth already had: an announcer cut off from a Redis
//! that everyone else still reaches.

use std::{
    collections::HashMap,
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
/// The budget of each Redis call of the bus thread.
const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// The pause before the bus thread subscribes again after a failure.
const RETRY: Duration = Duration::from_millis(200);
/// Topics are spread over this many counters: a change voids the leases of its slot only.
const SLOTS: usize = 64;

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
    client: Option<redis::Client>,
    instance: String,
    /// `{prefix}:bus`: the changes every instance reads.
    channel: String,
    /// `{prefix}:bus:<instance>`: this instance's heartbeats and the acknowledgements of its changes.
    own: String,
    started: Instant,
    /// Nanoseconds since `started` at which the newest heartbeat read back was sent (0: none).
    confirmed: AtomicU64,
    generation: AtomicU64,
    slots: [AtomicU64; SLOTS],
    next_change: AtomicU64,
    /// Acknowledgements received for this instance's changes in flight.
    waiting: Mutex<HashMap<u64, watch::Sender<usize>>>,
}

/// A change being announced: build the script's `PUBLISH` from [`channel`](Self::channel) and
/// [`message`](Self::message), then [`delivered`](Self::delivered) or [`failed`](Self::failed).
pub struct Announcement {
    bus: Bus,
    id: u64,
    message: String,
    acks: watch::Receiver<usize>,
}

impl Bus {
    /// A bus over `redis_url` whose thread runs until the last clone is dropped.
    pub fn start(redis_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let bus = Self::new(Some(redis::Client::open(redis_url)?), prefix);
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

    /// A bus that is never live (every lease is refused): per-instance caches ask Redis each time.
    pub fn off(prefix: &str) -> Self {
        Self::new(None, prefix)
    }

    fn new(client: Option<redis::Client>, prefix: &str) -> Self {
        let instance = Uuid::new_v4().simple().to_string();
        Self(Arc::new(Inner {
            client,
            channel: format!("{prefix}:bus"),
            own: format!("{prefix}:bus:{instance}"),
            instance,
            started: Instant::now(),
            confirmed: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            next_change: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        }))
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.0.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
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
        let (tx, acks) = watch::channel(0);
        self.waiting().insert(id, tx);
        Announcement {
            bus: self.clone(),
            id,
            message,
            acks,
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Sender<usize>>> {
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
                    self.acknowledged(change.parse().ok()?);
                    return None;
                }
                Some((format!("{}:{from}", self.0.channel), format!("a {change}")))
            }
            "a" => {
                self.acknowledged(parts.next()?.parse().ok()?);
                None
            }
            _ => None,
        }
    }

    /// One more instance has processed this instance's change `change`.
    fn acknowledged(&self, change: u64) {
        if let Some(tx) = self.waiting().get(&change) {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// A new subscription: nothing leased before it is trusted (messages may have been missed).
    fn resubscribed(&self) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        self.0.confirmed.store(0, Ordering::Release);
    }
}

impl Announcement {
    /// The channel to `PUBLISH` on, in the same script as the change.
    pub fn channel(&self) -> &str {
        &self.bus.0.channel
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The script ran and `PUBLISH` reached `receivers` instances: wait for their
    /// acknowledgements (at most [`ACK_WAIT`]).
    pub async fn delivered(mut self, receivers: i64) {
        let wanted = usize::try_from(receivers).unwrap_or(0);
        let acked = tokio::time::timeout(ACK_WAIT, self.acks.wait_for(|n| *n >= wanted))
            .await
            .is_ok_and(|r| r.is_ok());
        if !acked {
            tracing::warn!(
                receivers,
                acknowledged = *self.acks.borrow(),
                "invalidation bus: not every instance acknowledged; the others' leases lapsed"
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
    let Some(client) = bus.0.client.clone() else {
        anyhow::bail!("no Redis");
    };
    let mut pubsub = timed("subscribe", client.get_async_pubsub()).await?;
    timed("subscribe", pubsub.subscribe(&[&bus.0.channel, &bus.0.own])).await?;
    let publisher = timed("connect", client.get_multiplexed_async_connection()).await?;
    bus.resubscribed();
    let mut messages = pubsub.into_on_message();
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let own = bus.0.own.clone();
    loop {
        tokio::select! {
            _ = beat.tick() => {
                if weak.strong_count() <= 1 {
                    return Ok(());
                }
                // Sent from a task of its own: reading goes on while it is in flight.
                let mut conn = publisher.clone();
                let (channel, sent) = (own.clone(), format!("h {}", bus.now_nanos()));
                tokio::spawn(async move {
                    let _ = timed("heartbeat", redis::cmd("PUBLISH").arg(channel).arg(sent).query_async::<i64>(&mut conn)).await;
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

    fn live(bus: &Bus) {
        bus.resubscribed();
        let _ = bus.on_message(&format!("h {}", bus.now_nanos().max(1)));
    }

    #[test]
    fn a_lease_holds_until_a_change_of_its_slot_or_a_new_subscription() {
        let bus = Bus::off("t");
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
        assert_eq!(ack, Some(("t:bus:peer".to_owned(), "a 7".to_owned())));
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
        let bus = Bus::off("t");
        bus.resubscribed();
        let _ = bus.on_message(&format!("h {}", bus.now_nanos()));
        assert!(bus.live());
        std::thread::sleep(LIVE_FOR + Duration::from_millis(20));
        assert!(!bus.live(), "an old heartbeat does not keep it live");
        assert!(bus.lease(Topic::Cache("products")).is_none());
    }

    #[test]
    fn malformed_messages_are_ignored() {
        let bus = Bus::off("t");
        for m in ["", "x", "h", "h nan", "c", "c a", "a", "a nan", "c a 1 99999"] {
            let _ = bus.on_message(m);
        }
        assert!(!bus.live());
    }

    #[tokio::test]
    async fn acknowledgements_are_counted_for_their_change() {
        let bus = Bus::off("t");
        let a = bus.announce(&[Topic::Cache("users")]);
        assert!(a.message().starts_with(&format!("c {} {} ", bus.0.instance, a.id)));
        let id = a.id;
        let _ = bus.on_message(&format!("a {id}"));
        let _ = bus.on_message(&format!("a {}", id + 1000));
        let _ = bus.on_message(&format!("a {id}"));
        let started = Instant::now();
        a.delivered(2).await;
        assert!(started.elapsed() < ACK_WAIT, "two acknowledgements were enough");
        assert!(bus.waiting().is_empty(), "the waiter is gone with its announcement");
        let b = bus.announce(&[Topic::Cache("users")]);
        let started = Instant::now();
        b.delivered(1).await;
        assert!(
            started.elapsed() >= ACK_WAIT,
            "without its acknowledgement it waits it out"
        );
    }
}
