//! The server-wide budget of memory that requests in flight may hold
//! (`server.max_inflight_bytes`).
//!
//! Each connection bounds its own input (one read plus one line), but
//! nothing bounded them together: during a storage outage a thousand
//! connections pipelining STOREs held about a kilobyte per request, and
//! eighty 14 MiB STOREs held gigabytes. Now every read is paid for from
//! one budget before its requests are looked at: the bytes read plus
//! [`REQUEST_COST`] per line in them. A connection that cannot pay waits,
//! and is not read from meanwhile (TCP's window then stops its client):
//! backpressure instead of growth. What is paid for comes back once the
//! requests are answered.
//!
//! A line longer than what is left of the budget could never be paid for
//! if every connection held part of one: one connection at a time may
//! therefore go on without paying (the *oversize lane*) until it holds no
//! more than it paid for. So the memory of requests in flight stays under
//! the budget plus one maximum-length line and one read.
//!
//! Clients that stall in the middle of long lines keep what they paid for
//! as long as they stay: enough of them would hold the whole budget, and
//! the lane, and nobody else could be read. So an eighth of the budget is
//! a *reserve* that only reads of complete lines may use (their requests
//! are answered and the reserve paid back at once): requests keep being
//! served however many partial lines are held.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a request costs beyond its bytes while it is in flight: its op in
/// the batch (56 bytes), its reply, and what an unfinished STORE keeps (its
/// reservation, its record for the backend, the channel its outcome comes
/// back on, and PostgreSQL's engine's share). Measured with PostgreSQL
/// stopped and a thousand connections pipelining 30-byte STOREs: about
/// 1 KiB each, so with this cost the budget is close to what they hold.
pub const REQUEST_COST: usize = 1024;

/// The budget every connection pays from.
#[derive(Debug)]
pub struct InflightBudget {
    /// What any read may take: the budget less the reserve.
    bytes: Semaphore,
    /// Its size.
    general: usize,
    /// What only reads that end with a complete line may take.
    reserve: Semaphore,
    total: usize,
    /// One permit: the oversize lane.
    oversize: Arc<Semaphore>,
}

impl InflightBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Arc<InflightBudget> {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        let reserve = total / 8;
        let general = total - reserve;
        Arc::new(InflightBudget {
            bytes: Semaphore::new(general),
            general,
            reserve: Semaphore::new(reserve),
            total,
            oversize: Arc::new(Semaphore::new(1)),
        })
    }

    /// Bytes paid for and not given back, by every connection.
    pub fn used(&self) -> usize {
        let free = self.bytes.available_permits() + self.reserve.available_permits();
        self.total - free.min(self.total)
    }

    /// What reading `fresh` costs: its bytes and its requests.
    pub fn cost_of(fresh: &[u8]) -> usize {
        // Most reads are one or a few short requests (pipeline 1): rather
        // than count their lines (about a tenth of such a request's
        // instructions), charge them as if every line were as short as a
        // request can be, `GET a\n`. Overcharged, the read pays a few KiB
        // more for the moment it is answered.
        let lines = if fresh.len() <= SHORT_READ {
            fresh.len().div_ceil(SHORTEST_REQUEST)
        } else {
            memchr::memchr_iter(b'\n', fresh).count()
        };
        fresh.len() + lines * REQUEST_COST
    }
}

/// Reads up to this size are charged by [`SHORTEST_REQUEST`], not counted.
const SHORT_READ: usize = 64;

/// The shortest line that is a request (`GET a` and its newline).
const SHORTEST_REQUEST: usize = 6;

/// How often the budget is looked at for a burst that has ended.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// A drop in memory worth giving back after (or half the budget, if that
/// is less).
const BURST_BYTES: usize = 8 << 20;

/// Gives memory back to the system after each burst (looked at once a
/// second): freed, glibc's allocator keeps memory for reuse, so the
/// resident memory of a server that got through an outage stayed near its
/// peak (610 of 654 MiB). `footprint` estimates what the work in progress
/// holds (the budget in use, the connections' buffers). Once it has fallen
/// by a burst from its peak, to a quarter of it or less (the work has
/// mostly ended, not just ebbed), and stayed there for a second with the
/// oversize lane free (so that what is freed after the budget is given
/// back, the last replies and validator copies, is freed too), the
/// allocator's free memory is returned. Runs until dropped.
pub async fn give_back_after_bursts(budget: &InflightBudget, footprint: impl Fn() -> usize) {
    let burst = BURST_BYTES.min(budget.total / 2);
    let mut peak = 0;
    let mut quiet_since_last_look = false;
    let mut tick = tokio::time::interval(LOOK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = footprint();
        peak = peak.max(now);
        // A line in the oversize lane is paid for by nobody.
        let lane_free = budget.oversize.available_permits() > 0;
        let quiet = peak - now >= burst && now <= peak / 4 && lane_free;
        if quiet && quiet_since_last_look {
            peak = now;
            // It walks the allocator's free lists: not on a worker.
            let _ = tokio::task::spawn_blocking(trim_allocator).await;
            log::debug!("a burst ended: free memory returned to the system");
        }
        quiet_since_last_look = quiet;
    }
}

/// Allocations from this size up get pages of their own, returned to the
/// system when freed (glibc's default starts at 128 KiB and rises to the
/// largest block freed, up to 32 MiB: after one large value, every later
/// one came from the heaps, whose tops `malloc_trim` leaves alone). 4 MiB
/// keeps the reply buffers of a batch (about 1 to 2 MiB) in the heaps.
const OWN_PAGES_FROM: usize = 4 << 20;

/// Free memory at the top of a heap beyond this is returned when freed.
const HEAP_TOP_KEEP: usize = 8 << 20;

/// Fixes glibc's thresholds, once per process: blocks of 4 MiB or more get
/// pages of their own, and a heap keeps at most 8 MiB free at its top
/// (glibc would otherwise raise both after the first large value, and keep
/// memory [`give_back_after_bursts`] cannot return).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            use nix::libc::{M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, mallopt};
            // SAFETY: mallopt only sets the allocator's tunables (under its
            // lock); both values are in the range glibc accepts.
            unsafe {
                mallopt(M_MMAP_THRESHOLD, OWN_PAGES_FROM as i32);
                mallopt(M_TRIM_THRESHOLD, HEAP_TOP_KEEP as i32);
            }
        });
    }
}

/// Returns the allocator's free memory to the system.
fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases glibc's own free lists;
    // it takes the allocator's locks like any malloc call.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// One connection's part of the budget: what it has paid for and not
/// given back yet. Dropping it gives everything back.
#[derive(Debug)]
pub struct Share {
    budget: Arc<InflightBudget>,
    /// Permits taken from the budget (forgotten there, added back by
    /// [`settle`](Self::settle) and on drop).
    paid: usize,
    /// Permits taken from the reserve (for complete lines only: all given
    /// back at the next settle).
    paid_reserve: usize,
    /// Held while the connection is in the oversize lane.
    oversize: Option<OwnedSemaphorePermit>,
}

impl Share {
    pub fn new(budget: Arc<InflightBudget>) -> Share {
        Share {
            budget,
            paid: 0,
            paid_reserve: 0,
            oversize: None,
        }
    }

    /// Pays `cost` if the budget has it now (or the connection is in the
    /// oversize lane, where reads are not paid for); a read that leaves no
    /// partial line (`complete`) may also pay from the reserve. `false`:
    /// call [`pay`](Self::pay) and wait.
    pub fn try_pay(&mut self, cost: usize, complete: bool) -> bool {
        if self.oversize.is_some() || cost == 0 {
            return true;
        }
        let cost = self.clamp(cost);
        if let Ok(permits) = self.budget.bytes.try_acquire_many(cost as u32) {
            permits.forget();
            self.paid += cost;
            return true;
        }
        complete && self.try_pay_reserve(cost)
    }

    fn try_pay_reserve(&mut self, cost: usize) -> bool {
        match self.budget.reserve.try_acquire_many(cost as u32) {
            Ok(permits) => {
                permits.forget();
                self.paid_reserve += cost;
                true
            }
            Err(_) => false,
        }
    }

    /// Waits until `cost` is paid (from the reserve too, for a
    /// `complete` read), or the oversize lane is free (then the connection
    /// goes on without paying, as the only one).
    pub async fn pay(&mut self, cost: usize, complete: bool) {
        if self.try_pay(cost, complete) {
            return;
        }
        let cost = self.clamp(cost);
        let budget = self.budget.clone();
        let from_reserve = async {
            if complete && cost <= budget.total - budget.general {
                budget.reserve.acquire_many(cost as u32).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            // Paying is preferred: the lane is for when nothing else moves.
            biased;
            permits = budget.bytes.acquire_many(cost as u32) => {
                // The budget is never closed.
                if let Ok(permits) = permits {
                    permits.forget();
                    self.paid += cost;
                }
            }
            permits = from_reserve => {
                if let Ok(permits) = permits {
                    permits.forget();
                    self.paid_reserve += cost;
                }
            }
            token = budget.oversize.clone().acquire_owned() => self.oversize = token.ok(),
        }
    }

    /// The requests answered, the connection keeps `unanswered` bytes (a
    /// partial line): gives back what it paid beyond them, and leaves the
    /// oversize lane once it has paid for all it holds — paying what its
    /// partial line still lacks if the budget has it now, so that a client
    /// whose every read ends mid-line cannot keep the lane while the
    /// budget could carry it.
    pub fn settle(&mut self, unanswered: usize) {
        if self.paid_reserve > 0 {
            self.budget.reserve.add_permits(self.paid_reserve);
            self.paid_reserve = 0;
        }
        if self.paid > unanswered {
            self.budget.bytes.add_permits(self.paid - unanswered);
            self.paid = unanswered;
        }
        if self.oversize.is_some() {
            let shortfall = unanswered - self.paid;
            let paid_up = shortfall == 0
                || (shortfall <= self.budget.general
                    && self
                        .budget
                        .bytes
                        .try_acquire_many(self.clamp(shortfall) as u32)
                        .map(|permits| permits.forget())
                        .is_ok());
            if paid_up {
                self.paid = unanswered;
                self.oversize = None;
            }
        }
    }

    /// A cost the budget can ever have: at most all of it (a read of many
    /// tiny lines into a small budget), and what one acquire can take.
    fn clamp(&self, cost: usize) -> usize {
        cost.min(self.budget.general.max(1)).min(u32::MAX as usize)
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.settle(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn within_10s<F: std::future::Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("done within 10 s")
    }

    #[test]
    fn a_read_costs_its_bytes_and_its_lines() {
        assert_eq!(InflightBudget::cost_of(b""), 0);
        // A short read is charged as if made of the shortest requests.
        assert_eq!(InflightBudget::cost_of(b"GET a"), 5 + REQUEST_COST);
        assert_eq!(
            InflightBudget::cost_of(b"GET a\r\nGET b\n"),
            13 + 3 * REQUEST_COST
        );
        // A longer one is charged by its lines, never less than they hold.
        let long = b"GET a\n".repeat(20);
        assert_eq!(InflightBudget::cost_of(&long), 120 + 20 * REQUEST_COST);
        for len in 0..=SHORT_READ {
            let lines = b"GET a\n".repeat(12)[..len]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            assert!(
                InflightBudget::cost_of(&b"GET a\n".repeat(12)[..len])
                    >= len + lines * REQUEST_COST
            );
        }
    }

    #[tokio::test]
    async fn a_share_waits_for_what_others_give_back() {
        let budget = InflightBudget::new(1000);
        let mut first = Share::new(budget.clone());
        assert!(first.try_pay(800, false));
        // The lane is taken, so the second must wait for the budget.
        let lane = budget.oversize.clone().acquire_owned().await.unwrap();
        let mut second = Share::new(budget.clone());
        assert!(!second.try_pay(400, false));
        let waiting = tokio::spawn(async move {
            second.pay(400, false).await;
            second
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "200 bytes left cannot pay for 400");
        first.settle(100);
        let second = within_10s(waiting).await.unwrap();
        assert_eq!((second.paid, budget.used()), (400, 500));
        drop((first, second, lane));
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn when_the_budget_is_short_one_share_goes_on_in_the_lane() {
        let budget = InflightBudget::new(1000);
        let mut holder = Share::new(budget.clone());
        assert!(holder.try_pay(800, false));
        let mut big = Share::new(budget.clone());
        within_10s(big.pay(500, false)).await;
        assert!(big.oversize.is_some() && big.paid == 0);
        // In the lane, reads are not paid for; nobody else gets the lane.
        assert!(big.try_pay(10_000, false));
        let mut other = Share::new(budget.clone());
        assert!(!other.try_pay(500, false));
        // Its line answered, it leaves the lane.
        big.settle(0);
        assert!(big.oversize.is_none());
        within_10s(other.pay(500, false)).await;
        assert!(other.oversize.is_some(), "the lane is free again");
    }

    #[tokio::test]
    async fn a_share_in_the_lane_leaves_it_once_the_budget_can_carry_its_partial_line() {
        let budget = InflightBudget::new(1000);
        let mut holder = Share::new(budget.clone());
        assert!(holder.try_pay(800, false));
        let mut pipelining = Share::new(budget.clone());
        within_10s(pipelining.pay(500, false)).await;
        assert!(pipelining.oversize.is_some());
        // Its read ended mid-line; while the budget is short it stays.
        pipelining.settle(300);
        assert!(pipelining.oversize.is_some() && pipelining.paid == 0);
        // Once the budget has room, the next settle pays the partial line
        // and leaves the lane, though a partial line is still held.
        holder.settle(0);
        pipelining.settle(300);
        assert!(pipelining.oversize.is_none());
        assert_eq!((pipelining.paid, budget.used()), (300, 300));
        let mut other = Share::new(budget.clone());
        within_10s(other.pay(5000, false)).await;
        assert!(other.oversize.is_some(), "the lane is free for others");
    }

    #[tokio::test]
    async fn complete_lines_are_read_from_the_reserve_when_partial_ones_hold_the_rest() {
        let budget = InflightBudget::new(1000);
        // Stalled long lines hold all that partial lines may, and the lane.
        let mut stalled = Share::new(budget.clone());
        assert!(stalled.try_pay(875, false));
        let mut in_lane = Share::new(budget.clone());
        within_10s(in_lane.pay(500, false)).await;
        assert!(in_lane.oversize.is_some());
        // A read of complete lines is still paid for, from the reserve.
        let mut small = Share::new(budget.clone());
        assert!(!small.try_pay(100, false), "a partial line may not use it");
        assert!(small.try_pay(100, true));
        assert_eq!(budget.used(), 975);
        small.settle(0);
        assert_eq!(budget.used(), 875);
        // Waiting for it works too.
        let mut other = Share::new(budget.clone());
        assert!(other.try_pay(125, true));
        let waiting = tokio::spawn(async move {
            small.pay(100, true).await;
            small
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        other.settle(0);
        let small = within_10s(waiting).await.unwrap();
        assert_eq!(small.paid_reserve, 100);
    }

    #[tokio::test]
    async fn a_cost_above_the_whole_budget_is_clamped() {
        let budget = InflightBudget::new(1000);
        let mut share = Share::new(budget.clone());
        // At most all of what partial lines may take: the budget less its
        // reserve.
        assert!(share.try_pay(5000, false));
        assert_eq!(budget.used(), 875);
        drop(share);
        assert_eq!(budget.used(), 0);
    }
}
