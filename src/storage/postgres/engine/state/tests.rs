//! The state machine on its own: the tests play the store actor and
//! PostgreSQL (they hand back each job's rows) and steer the clock.

use super::super::messages::Renewal;
use super::*;
use crate::metrics::StoreKind;
use crate::metrics::{PostgresOp, QueryResult};
use crate::protocol::Limits;
use crate::protocol::ServerFault;
use crate::storage::postgres::replication::Replication;
use crate::storage::{Event, Found, Lease, Looked};

const LEASE: Duration = Duration::from_secs(15);
const TIMEOUT: Duration = Duration::from_secs(5);

fn settings(pool_size: usize) -> Settings {
    Settings {
        pool_size,
        lease: LEASE,
        request_timeout: TIMEOUT,
        limits: Limits::default(),
        table: "jnhp_names".into(),
    }
}

/// What one call of `outputs` decided, sorted by kind.
#[derive(Default)]
struct Seen {
    jobs: Vec<Job>,
    events: Vec<Event<u32>>,
    answers: Vec<Found>,
    health: Vec<Health>,
    replications: Vec<Result<Replication, String>>,
}

/// A token that tells lookups apart in a test (their first name's length
/// and first byte).
fn names_token(names: &[Bytes]) -> u32 {
    names.first().map_or(0, |n| {
        n.len() as u32 * 256 + u32::from(n.first().copied().unwrap_or(0))
    })
}

/// A machine under test, with its clock.
struct Bench {
    state: State<u32>,
    metrics: Arc<Metrics>,
    now: Instant,
}

impl Bench {
    /// A machine whose first renewal (due at once) has run.
    fn new(pool_size: usize) -> Bench {
        let now = Instant::now();
        let metrics = Metrics::new(StoreKind::Postgres);
        let state = State::new(settings(pool_size), metrics.clone(), now);
        let mut bench = Bench {
            state,
            metrics,
            now,
        };
        bench.state.wake(now);
        let renew = bench.only_job();
        assert!(matches!(&renew.work, Work::Renew { leases, .. } if leases.is_empty()));
        bench.done(renew.id, Ok(Rows::Renewed(Renewal::default())));
        assert!(bench.outputs().jobs.is_empty());
        bench
    }

    fn outputs(&mut self) -> Seen {
        let mut seen = Seen::default();
        for output in self.state.outputs(self.now) {
            match output {
                Output::Start(job) => seen.jobs.push(job),
                Output::Report(event) => seen.events.push(event),
                Output::Answer(_, found) => seen.answers.push(found),
                Output::Health(health) => seen.health.push(health),
                Output::Replication(found) => seen.replications.push(found),
            }
        }
        seen
    }

    /// The one job started now (and nothing else decided).
    fn only_job(&mut self) -> Job {
        let mut seen = self.outputs();
        assert_eq!(seen.jobs.len(), 1, "jobs: {:?}", seen.jobs);
        assert!(seen.events.is_empty() && seen.answers.is_empty());
        seen.jobs.remove(0)
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Moves the clock to the machine's next wake-up and wakes it.
    fn wake_when_due(&mut self) {
        self.now = self.now.max(self.state.next_wake());
        self.state.wake(self.now);
    }

    fn request(&mut self, request: Request<u32>) {
        self.state.request(request, self.now);
    }

    fn store(&mut self, name: &str, token: u32, lease: Option<Lease>) {
        let record = Record {
            name: name.as_bytes().into(),
            value: b"value".to_vec().into(),
            token,
            lease,
        };
        self.request(Request::Append(vec![record]));
    }

    /// Looks `names` up; the answer comes as an `Output::Answer` with
    /// the token returned.
    fn look_up(&mut self, names: &[&str]) -> u32 {
        let names: Vec<Bytes> = names.iter().map(|n| Bytes::from(n.to_string())).collect();
        let token = names_token(&names);
        self.request(Request::LookUp(names, token));
        token
    }

    fn done(&mut self, id: u64, result: Result<Rows, String>) {
        let done = Done {
            id,
            took: Duration::from_millis(1),
            result,
        };
        self.state.finished(done, self.now);
    }

    /// Reserves `name` and answers the job `held`: the lease.
    fn hold(&mut self, name: &str) -> Lease {
        self.request(Request::Reserve(name.as_bytes().into()));
        let job = self.only_job();
        let lease = write_args(&job).acquire_leases[0];
        self.done(job.id, Ok(Rows::Write(acquire_rows(name, held()))));
        let seen = self.outputs();
        assert_eq!(reserved(&seen), held_lease(lease));
        Lease(lease)
    }
}

fn write_args(job: &Job) -> &WriteArgs {
    match &job.work {
        Work::Write(args) => args,
        other => panic!("not a write: {other:?}"),
    }
}

fn renewed_leases(job: &Job) -> Vec<i64> {
    match &job.work {
        Work::Renew { leases, lease_secs } => {
            assert_eq!(*lease_secs, LEASE.as_secs_f64());
            leases.clone()
        }
        other => panic!("not a renewal: {other:?}"),
    }
}

fn read_names(job: &Job) -> Vec<Bytes> {
    match &job.work {
        Work::Read { names } => names.clone(),
        other => panic!("not a read: {other:?}"),
    }
}

fn insert_rows(name: &str, row: InsertRow) -> WriteRows {
    let mut rows = WriteRows::default();
    rows.inserts.insert(name.as_bytes().to_vec(), row);
    rows
}

fn acquire_rows(name: &str, row: AcquireRow) -> WriteRows {
    let mut rows = WriteRows::default();
    rows.acquires.insert(name.as_bytes().to_vec(), row);
    rows
}

fn stored() -> InsertRow {
    InsertRow {
        stored: true,
        free: true,
        wait_secs: None,
    }
}

fn waiting(secs: f64) -> InsertRow {
    InsertRow {
        stored: false,
        free: false,
        wait_secs: Some(secs),
    }
}

fn held() -> AcquireRow {
    AcquireRow {
        held: true,
        taken: false,
        wait_secs: None,
    }
}

/// The outcomes of STOREs reported, with their tokens.
fn written(seen: &Seen) -> Vec<(u32, Outcome)> {
    let mut written = Vec::new();
    for event in &seen.events {
        if let Event::Written(w) = event {
            written.push((w.token, w.outcome.clone()));
        }
    }
    written
}

/// The answers to reservations reported (as `{:?}`: `Reserved` has no
/// `PartialEq`).
fn reserved(seen: &Seen) -> Vec<String> {
    let mut reserved = Vec::new();
    for event in &seen.events {
        if let Event::Reserved { reserved: r, .. } = event {
            reserved.push(format!("{r:?}"));
        }
    }
    reserved
}

fn held_lease(lease: i64) -> Vec<String> {
    vec![format!("{:?}", Reserved::Held(Lease(lease)))]
}

fn unavailable() -> Outcome {
    Outcome::Failed(ServerFault::StorageUnavailable)
}

// Leases.

/// A held reservation is renewed every third of the lease, until the
/// store releases it; the release is a statement of its own.
#[test]
fn a_held_reservation_is_renewed_every_third_of_the_lease_until_released() {
    let mut bench = Bench::new(8);
    let started = bench.now;
    let lease = bench.hold("a");
    assert_eq!(bench.state.next_wake(), started + LEASE / 3);
    bench.advance(LEASE / 3 - Duration::from_millis(1));
    bench.state.wake(bench.now);
    assert!(bench.outputs().jobs.is_empty(), "renewed early");
    bench.wake_when_due();
    let renewal = bench.only_job();
    assert_eq!(renewed_leases(&renewal), vec![lease.0]);
    assert_eq!(renewal.limit, TIMEOUT);
    bench.done(renewal.id, Ok(Rows::Renewed(Renewal::default())));

    bench.request(Request::Release(lease));
    let release = bench.only_job();
    assert_eq!(write_args(&release).releases, vec![lease.0]);
    bench.done(release.id, Ok(Rows::Write(WriteRows::default())));
    assert!(bench.outputs().events.is_empty());

    bench.wake_when_due();
    assert_eq!(bench.now, started + 2 * (LEASE / 3));
    assert_eq!(renewed_leases(&bench.only_job()), Vec::<i64>::new());
}

/// A STORE validated under a reservation carries its lease into the
/// statement; once it is answered the reservation is over and no longer
/// renewed (stored or not).
#[test]
fn a_lease_used_by_a_store_is_no_longer_renewed() {
    let mut bench = Bench::new(8);
    let lease = bench.hold("a");
    bench.store("a", 7, Some(lease));
    let job = bench.only_job();
    let args = write_args(&job);
    assert!(args.plain.names.is_empty());
    assert_eq!(args.leased.leases, vec![Some(lease.0)]);
    bench.done(job.id, Ok(Rows::Write(insert_rows("a", stored()))));
    assert_eq!(written(&bench.outputs()), vec![(7, Outcome::Stored)]);
    bench.wake_when_due();
    assert_eq!(renewed_leases(&bench.only_job()), Vec::<i64>::new());
}

/// A renewal that comes late (a busy machine) does not make a burst of
/// renewals to catch up: the next is a full third of the lease later.
#[test]
fn a_late_renewal_is_followed_by_a_full_period() {
    let mut bench = Bench::new(8);
    bench.advance(LEASE * 2);
    bench.state.wake(bench.now);
    let renewal = bench.only_job();
    bench.done(renewal.id, Ok(Rows::Renewed(Renewal::default())));
    assert_eq!(bench.state.next_wake(), bench.now + LEASE / 3);
}

/// Each reservation gets its own lease number, and STOREs their own write
/// ids: they tell this front-end's rows from one another.
#[test]
fn leases_and_write_ids_are_unique() {
    let mut bench = Bench::new(8);
    let a = bench.hold("a");
    let b = bench.hold("b");
    assert_ne!(a, b);
    bench.store("c", 1, None);
    bench.store("d", 2, None);
    let job = bench.only_job();
    let ids = &write_args(&job).plain.write_ids;
    assert_eq!(ids.len(), 2);
    assert!(ids[0] != ids[1] && !ids.contains(&a.0) && !ids.contains(&b.0));
}

// Waiting.

/// A STORE of a name another front-end holds is parked until that
/// reservation's release is announced, then tried again at once.
#[test]
fn a_parked_store_is_woken_by_the_release_notice() {
    let mut bench = Bench::new(8);
    bench.store("a", 1, None);
    let job = bench.only_job();
    bench.done(job.id, Ok(Rows::Write(insert_rows("a", waiting(3.0)))));
    let seen = bench.outputs();
    assert!(seen.jobs.is_empty() && seen.events.is_empty(), "not parked");
    assert_eq!(
        bench.state.next_wake(),
        bench.now + Duration::from_secs(3) + EXPIRY_SLACK
    );

    // Another name's release wakes nothing.
    bench.advance(Duration::from_secs(1));
    bench
        .state
        .notice(Notice::Released(b"b".to_vec()), bench.now);
    assert!(bench.outputs().jobs.is_empty());

    bench
        .state
        .notice(Notice::Released(b"a".to_vec()), bench.now);
    let again = bench.only_job();
    assert_eq!(write_args(&again).plain.names, vec![b"a".to_vec()]);
    bench.done(again.id, Ok(Rows::Write(insert_rows("a", stored()))));
    assert_eq!(written(&bench.outputs()), vec![(1, Outcome::Stored)]);
}

/// Without a release notice, a parked STORE looks again when the blocking
/// reservation expires (plus a little slack for the clocks), not before.
#[test]
fn a_parked_store_is_woken_at_the_reservations_expiry() {
    let mut bench = Bench::new(8);
    bench.store("a", 1, None);
    let job = bench.only_job();
    bench.done(job.id, Ok(Rows::Write(insert_rows("a", waiting(3.0)))));
    assert!(bench.outputs().jobs.is_empty());
    let expiry = bench.now + Duration::from_secs(3);
    bench.now = expiry;
    bench.state.wake(bench.now);
    assert!(bench.outputs().jobs.is_empty(), "woken before the slack");
    bench.wake_when_due();
    assert_eq!(bench.now, expiry + EXPIRY_SLACK);
    let again = bench.only_job();
    assert_eq!(write_args(&again).plain.names, vec![b"a".to_vec()]);
}

/// Waiting is not failing: a STORE parked longer than the request timeout
/// is tried again with a fresh deadline, not answered unavailable.
#[test]
fn a_parked_store_gets_a_fresh_deadline() {
    let mut bench = Bench::new(8);
    bench.store("a", 1, None);
    let job = bench.only_job();
    bench.done(job.id, Ok(Rows::Write(insert_rows("a", waiting(12.0)))));
    bench.advance(Duration::from_secs(12));
    bench
        .state
        .notice(Notice::Released(b"a".to_vec()), bench.now);
    let again = bench.only_job();
    assert_eq!(again.limit, TIMEOUT);
    bench.done(again.id, Err("server closed the connection".into()));
    let seen = bench.outputs();
    assert!(seen.events.is_empty(), "answered instead of retried");
}

/// The wait the database names is bounded by a lease (and a nonsensical
/// one is no wait): a parked request never sleeps past the lease.
#[test]
fn a_wait_is_bounded_by_the_lease() {
    let mut bench = Bench::new(8);
    bench.store("a", 1, None);
    bench.store("b", 2, None);
    let job = bench.only_job();
    let mut rows = insert_rows("a", waiting(1e9));
    rows.inserts.insert(b"b".to_vec(), waiting(f64::NAN));
    bench.done(job.id, Ok(Rows::Write(rows)));
    assert!(bench.outputs().jobs.is_empty());
    let bound = bench.now + LEASE + Duration::from_secs(1) + EXPIRY_SLACK;
    assert_eq!(bench.state.next_wake(), bench.now + EXPIRY_SLACK);
    bench.wake_when_due();
    assert_eq!(
        write_args(&bench.only_job()).plain.names,
        vec![b"b".to_vec()]
    );
    let parked = bench.state.parked.values().map(|(at, _)| *at);
    assert_eq!(parked.collect::<Vec<_>>(), vec![bound]);
}

/// A reservation of a name another front-end holds waits the same way.
#[test]
fn a_parked_reservation_is_woken_by_the_release_notice() {
    let mut bench = Bench::new(8);
    bench.request(Request::Reserve(b"a".to_vec().into()));
    let job = bench.only_job();
    let lease = write_args(&job).acquire_leases[0];
    let blocked = AcquireRow {
        held: false,
        taken: false,
        wait_secs: Some(3.0),
    };
    bench.done(job.id, Ok(Rows::Write(acquire_rows("a", blocked))));
    assert!(bench.outputs().events.is_empty());
    bench
        .state
        .notice(Notice::Released(b"a".to_vec()), bench.now);
    let again = bench.only_job();
    assert_eq!(write_args(&again).acquire_leases, vec![lease]);
    bench.done(again.id, Ok(Rows::Write(acquire_rows("a", held()))));
    assert_eq!(reserved(&bench.outputs()), held_lease(lease));
}

/// Listening again (after the LISTEN connection broke) may have missed
/// releases: every parked request looks again, and PostgreSQL counts as
/// reachable.
#[test]
fn listening_again_wakes_every_parked_request() {
    let mut bench = Bench::new(8);
    bench.store("a", 1, None);
    bench.store("b", 2, None);
    let job = bench.only_job();
    let mut rows = insert_rows("a", waiting(3.0));
    rows.inserts.insert(b"b".to_vec(), waiting(3.0));
    bench.done(job.id, Ok(Rows::Write(rows)));
    assert!(bench.outputs().jobs.is_empty());
    bench.state.notice(Notice::Lost("gone".into()), bench.now);
    assert_eq!(
        bench.outputs().health,
        vec![Health::Unreachable("gone".to_string())]
    );
    bench.state.notice(Notice::Listening, bench.now);
    let seen = bench.outputs();
    assert_eq!(seen.health, vec![Health::Reachable]);
    assert_eq!(seen.jobs.len(), 1);
    let mut names = write_args(&seen.jobs[0]).plain.names.clone();
    names.sort();
    assert_eq!(names, vec![b"a".to_vec(), b"b".to_vec()]);
}

/// A validated STORE whose reservation lapsed meanwhile competes again,
/// without the reservation, ahead of the STOREs queued after it.
#[test]
fn a_store_whose_reservation_lapsed_competes_again_without_it() {
    let mut bench = Bench::new(8);
    let lease = bench.hold("a");
    bench.store("a", 1, Some(lease));
    let job = bench.only_job();
    let lapsed = InsertRow {
        stored: false,
        free: false,
        wait_secs: None,
    };
    bench.done(job.id, Ok(Rows::Write(insert_rows("a", lapsed))));
    let again = bench.only_job();
    let args = write_args(&again);
    assert_eq!(args.plain.names, vec![b"a".to_vec()]);
    assert!(args.leased.names.is_empty());
}

// Retries.

/// A statement that fails is tried again every pause until the request's
/// timeout is spent; then the STORE is answered `storage unavailable`,
/// and the outage is reported once, not per failure.
#[test]
fn a_failing_store_is_retried_until_the_request_timeout() {
    let mut bench = Bench::new(8);
    let asked = bench.now;
    bench.store("a", 1, None);
    let mut attempts = 0;
    let mut reports = Vec::new();
    let mut seen = bench.outputs();
    let answer = loop {
        reports.append(&mut seen.health);
        let writes: Vec<_> = std::mem::take(&mut seen.jobs)
            .into_iter()
            .filter(|job| matches!(job.work, Work::Write(_)))
            .collect();
        assert_eq!(writes.len(), 1, "at {:?}", bench.now - asked);
        for job in writes {
            attempts += 1;
            assert!(job.limit <= TIMEOUT);
            assert_eq!(write_args(&job).plain.retried, vec![attempts > 1]);
            bench.done(job.id, Err("connection refused".into()));
        }
        seen = bench.outputs();
        reports.append(&mut seen.health);
        if !seen.events.is_empty() {
            assert!(seen.jobs.is_empty());
            break written(&seen);
        }
        bench.wake_when_due();
        assert!(bench.now < asked + TIMEOUT, "never answered");
        seen = bench.outputs();
    };
    assert_eq!(answer, vec![(1, unavailable())]);
    assert!(bench.now + RETRY_PAUSE >= asked + TIMEOUT, "gave up early");
    let pauses = (TIMEOUT.as_millis() / RETRY_PAUSE.as_millis()) as usize;
    assert!(
        (pauses - 2..=pauses).contains(&attempts),
        "{attempts} attempts"
    );
    assert_eq!(
        reports,
        vec![Health::Unwritable("connection refused".to_string())]
    );
    let pg = bench.metrics.postgres.as_ref().unwrap();
    assert_eq!(
        pg.queries[PostgresOp::Write][QueryResult::Error].load(Relaxed),
        attempts as u64
    );
}

/// A STORE whose answer was lost is retried as such; when the retry finds
/// the row its lost attempt wrote (its own write id: the job reports it
/// stored), it is answered stored, not taken, and PostgreSQL is reported
/// reachable again.
#[test]
fn a_store_whose_answer_was_lost_and_that_meets_its_own_row_is_stored() {
    let mut bench = Bench::new(8);
    bench.store("a", 1, None);
    let first = bench.only_job();
    let write_id = write_args(&first).plain.write_ids[0];
    bench.done(first.id, Err("no answer within 5000 ms".into()));
    assert!(bench.outputs().events.is_empty());
    bench.wake_when_due();
    let retry = bench.only_job();
    let args = write_args(&retry);
    assert_eq!(args.plain.write_ids, vec![write_id]);
    assert_eq!(args.plain.retried, vec![true]);
    bench.done(retry.id, Ok(Rows::Write(insert_rows("a", stored()))));
    let seen = bench.outputs();
    assert_eq!(written(&seen), vec![(1, Outcome::Stored)]);
    assert_eq!(seen.health, vec![Health::Writable]);
}

/// A name with another's row is taken.
#[test]
fn a_store_that_meets_another_row_is_taken() {
    let mut bench = Bench::new(8);
    bench.store("a", 1, None);
    let job = bench.only_job();
    let taken = InsertRow {
        stored: false,
        free: true,
        wait_secs: None,
    };
    bench.done(job.id, Ok(Rows::Write(insert_rows("a", taken))));
    assert_eq!(written(&bench.outputs()), vec![(1, Outcome::Taken)]);
}

/// A write whose commit drew a warning is as unknown as a lost answer:
/// nothing is answered, every request is tried again (STOREs as retries)
/// and the job is counted as unconfirmed.
#[test]
fn an_unconfirmed_write_is_tried_again() {
    let mut bench = Bench::new(8);
    bench.store("a", 1, None);
    let job = bench.only_job();
    let mut rows = insert_rows("a", stored());
    rows.unconfirmed = true;
    bench.done(job.id, Ok(Rows::Write(rows)));
    let seen = bench.outputs();
    assert!(seen.events.is_empty());
    assert_eq!(
        seen.health,
        vec![Health::Unwritable(UNCONFIRMED.to_string())]
    );
    let pg = bench.metrics.postgres.as_ref().unwrap();
    assert_eq!(pg.unconfirmed.load(Relaxed), 1);
    bench.wake_when_due();
    assert_eq!(write_args(&bench.only_job()).plain.retried, vec![true]);
}

/// Reservations and lookups fail the same way once their time is spent;
/// a release that never succeeds is dropped (the reservation lapses).
#[test]
fn reservations_lookups_and_releases_give_up_at_the_request_timeout() {
    let mut bench = Bench::new(8);
    let lease = bench.hold("held");
    bench.request(Request::Reserve(b"a".to_vec().into()));
    bench.request(Request::Release(lease));
    let _answer = bench.look_up(&["b"]);
    let asked = bench.now;
    let mut seen = bench.outputs();
    while bench.now < asked + TIMEOUT + RETRY_PAUSE {
        for job in std::mem::take(&mut seen.jobs) {
            bench.done(job.id, Err("connection refused".into()));
        }
        seen = bench.outputs();
        if !seen.events.is_empty() {
            break;
        }
        bench.wake_when_due();
        seen = bench.outputs();
    }
    let unavailable = Reserved::Failed(ServerFault::StorageUnavailable);
    assert_eq!(reserved(&seen), vec![format!("{unavailable:?}")]);
    assert_eq!(seen.answers, vec![Err(ServerFault::StorageUnavailable)]);
    assert!(seen.jobs.is_empty(), "still trying: {:?}", seen.jobs);
}

// Reads and read-back.

/// A read answers each lookup in the order asked: values, absent names,
/// and values the protocol cannot carry as `ERROR` (never their bytes);
/// only servable values go to the actor's cache.
#[test]
fn a_read_answers_values_absent_names_and_unservable_values() {
    let mut bench = Bench::new(8);
    let _answer = bench.look_up(&["a", "b", "c"]);
    let job = bench.only_job();
    assert_eq!(read_names(&job), vec!["a", "b", "c"]);
    let found = vec![
        (Bytes::from("a"), Bytes::from("x")),
        (Bytes::from("c"), Bytes::new()),
    ];
    let rows = ReadRows {
        found,
        unconfirmed: false,
    };
    bench.done(job.id, Ok(Rows::Read(rows)));
    let seen = bench.outputs();
    let looked = vec![
        Looked::Value(Bytes::from("x")),
        Looked::Absent,
        Looked::Unservable,
    ];
    assert_eq!(seen.answers, vec![Ok(looked)]);
    // The actor caches the values it is handed; the engine reports
    // nothing else.
    assert!(seen.events.is_empty());
    let pg = bench.metrics.postgres.as_ref().unwrap();
    assert_eq!(pg.unservable.load(Relaxed), 1);
}

/// Rows read from a commit that drew a warning are not known durable:
/// they are neither answered nor cached until a read proves them. A
/// lookup that found nothing is answered at once (absence promises
/// nothing).
#[test]
fn an_unconfirmed_read_is_answered_only_after_a_confirmed_one() {
    let mut bench = Bench::new(8);
    let _a = bench.look_up(&["a"]);
    let _b = bench.look_up(&["b"]);
    let job = bench.only_job();
    assert_eq!(read_names(&job), vec!["a", "b"]);
    let rows = ReadRows {
        found: vec![(Bytes::from("a"), Bytes::from("x"))],
        unconfirmed: true,
    };
    bench.done(job.id, Ok(Rows::Read(rows)));
    let seen = bench.outputs();
    // Only the absent name is answered: the row found is neither answered
    // nor (so) cached by the actor.
    assert_eq!(seen.answers, vec![Ok(vec![Looked::Absent])]);
    assert!(seen.events.is_empty());
    bench.wake_when_due();
    let again = bench.only_job();
    assert_eq!(read_names(&again), vec!["a"]);
    let rows = ReadRows {
        found: vec![(Bytes::from("a"), Bytes::from("x"))],
        unconfirmed: false,
    };
    bench.done(again.id, Ok(Rows::Read(rows)));
    let seen = bench.outputs();
    assert_eq!(
        seen.answers,
        vec![Ok(vec![Looked::Value(Bytes::from("x"))])]
    );
}

// Dispatch.

/// Reads go first and writes take at most half the pool, so a read always
/// finds a connection; what waits shares the next statement.
#[test]
fn writes_take_at_most_half_the_pool() {
    let mut bench = Bench::new(2);
    bench.store("a", 1, None);
    let first = bench.only_job();
    bench.store("b", 2, None);
    bench.store("c", 3, None);
    assert!(bench.outputs().jobs.is_empty(), "a second writer");
    let _answer = bench.look_up(&["d"]);
    let read = bench.only_job();
    assert!(matches!(read.work, Work::Read { .. }));
    bench.done(first.id, Ok(Rows::Write(insert_rows("a", stored()))));
    let seen = bench.outputs();
    assert_eq!(written(&seen), vec![(1, Outcome::Stored)]);
    assert_eq!(seen.jobs.len(), 1);
    let names = &write_args(&seen.jobs[0]).plain.names;
    assert_eq!(names, &vec![b"b".to_vec(), b"c".to_vec()]);
}

/// One statement carries at most `MAX_PER_STATEMENT` requests.
#[test]
fn a_statement_carries_a_bounded_number_of_requests() {
    let mut bench = Bench::new(8);
    let records = (0..MAX_PER_STATEMENT + 10)
        .map(|i| Record {
            name: format!("n{i}").into_bytes().into(),
            value: b"v".to_vec().into(),
            token: i as u32,
            lease: None,
        })
        .collect();
    bench.request(Request::Append(records));
    let seen = bench.outputs();
    let sizes: Vec<usize> = seen
        .jobs
        .iter()
        .map(|job| write_args(job).plain.names.len())
        .collect();
    assert_eq!(sizes, vec![MAX_PER_STATEMENT, 10]);
}

// Shutdown.

/// Past the grace period nothing waits: queued, delayed and parked
/// requests are answered `storage unavailable` at once, and failures of
/// abandoned statements are not reported as an outage.
#[test]
fn past_the_grace_period_everything_open_is_answered() {
    let mut bench = Bench::new(8);
    bench.store("parked", 1, None);
    let job = bench.only_job();
    bench.done(job.id, Ok(Rows::Write(insert_rows("parked", waiting(3.0)))));
    bench.store("running", 2, None);
    let running = bench.only_job();
    let _answer = bench.look_up(&["queued"]);
    let read = bench.only_job();
    bench.state.expire(bench.now);
    assert!(bench.state.closing());
    let seen = bench.outputs();
    assert_eq!(written(&seen), vec![(1, unavailable())]);
    assert!(seen.jobs.is_empty());
    bench.done(running.id, Err("abandoned at shutdown".into()));
    bench.done(read.id, Err("abandoned at shutdown".into()));
    let seen = bench.outputs();
    assert_eq!(written(&seen), vec![(2, unavailable())]);
    assert_eq!(seen.answers, vec![Err(ServerFault::StorageUnavailable)]);
    assert!(seen.health.is_empty(), "reported an outage at shutdown");
}

// Health: reads and writes apart (issue 22).

/// While a synchronous standby stalls, reads work and commits do not. A
/// front-end once said "reachable again" at every read that worked
/// between two failed writes (154 lines in 20 s) and `/readyz` said
/// ready. Now the failed write is reported once as writes failing, reads
/// working meanwhile report nothing, and only a durable commit reports
/// writes working again.
#[test]
fn reads_that_work_while_writes_fail_report_nothing() {
    let mut bench = Bench::new(8);
    bench.store("a", 1, None);
    let write = bench.only_job();
    bench.done(write.id, Err("no answer within 3000 ms".into()));
    let mut reports = bench.outputs().health;
    for _ in 0..20 {
        bench.look_up(&["b"]);
        let mut seen = bench.outputs();
        reports.append(&mut seen.health);
        for job in seen.jobs {
            match job.work {
                Work::Read { .. } => {
                    let rows = ReadRows::default();
                    bench.done(job.id, Ok(Rows::Read(rows)));
                }
                // The STORE's retries keep failing.
                _ => bench.done(job.id, Err("no answer within 3000 ms".into())),
            }
        }
        reports.append(&mut bench.outputs().health);
        bench.advance(Duration::from_millis(50));
        bench.state.wake(bench.now);
    }
    assert_eq!(
        reports,
        vec![Health::Unwritable("no answer within 3000 ms".to_string())]
    );
}

/// Once writes fail, the renewal (which commits a check) comes every
/// [`CHECK_EVERY`] instead of every third of the lease, so writes are seen
/// to work again with no STORE arriving; one renewal runs at a time, and
/// an unconfirmed check (PostgreSQL warned) is no confirmation.
#[test]
fn while_writes_fail_a_renewal_checks_them_every_second() {
    let mut bench = Bench::new(8);
    bench.store("a", 1, None);
    let write = bench.only_job();
    bench.done(write.id, Err("connection refused".into()));
    let failed_at = bench.now;
    assert_eq!(
        bench.outputs().health,
        vec![Health::Unwritable("connection refused".to_string())]
    );
    assert!(LEASE / 3 > CHECK_EVERY);
    // The STORE's retries fail until its timeout; the checks go on.
    let mut renewal = None;
    while renewal.is_none() {
        bench.wake_when_due();
        for job in bench.outputs().jobs {
            match job.work {
                Work::Renew { .. } => renewal = Some(job),
                _ => bench.done(job.id, Err("connection refused".into())),
            }
        }
    }
    assert!(
        bench.now <= failed_at + CHECK_EVERY,
        "{:?}",
        bench.now - failed_at
    );
    // While it runs (longer than a check's period), no other starts.
    let started = bench.now;
    while bench.now < started + 3 * CHECK_EVERY {
        bench.wake_when_due();
        for job in bench.outputs().jobs {
            assert!(!matches!(job.work, Work::Renew { .. }), "a second renewal");
            bench.done(job.id, Err("connection refused".into()));
        }
    }
    let unconfirmed = Renewal {
        writes: Err(UNCONFIRMED.to_string()),
        replication: None,
    };
    bench.done(renewal.unwrap().id, Ok(Rows::Renewed(unconfirmed)));
    let seen = bench.outputs();
    assert!(seen.health.is_empty());
    let pg = bench.metrics.postgres.as_ref().unwrap();
    assert_eq!(pg.unconfirmed.load(Relaxed), 1);
    // Overdue meanwhile: the next one starts at once.
    let next = seen
        .jobs
        .into_iter()
        .find(|job| matches!(job.work, Work::Renew { .. }))
        .expect("the renewal due meanwhile");
    bench.done(next.id, Ok(Rows::Renewed(Renewal::default())));
    assert_eq!(bench.outputs().health, vec![Health::Writable]);
    // Writes work: after the check already due, the next is a third of
    // the lease on.
    let mut renewed_at = Vec::new();
    while renewed_at.len() < 2 {
        bench.wake_when_due();
        for job in bench.outputs().jobs {
            match job.work {
                Work::Renew { .. } => {
                    renewed_at.push(bench.now);
                    bench.done(job.id, Ok(Rows::Renewed(Renewal::default())));
                }
                // The STORE, retried: stored now.
                _ => bench.done(job.id, Ok(Rows::Write(insert_rows("a", stored())))),
            }
        }
    }
    assert_eq!(renewed_at[1] - renewed_at[0], LEASE / 3);
}

/// What a renewal read of the replication state goes out as it is; a
/// failure to read it is not a failure of writes.
#[test]
fn a_renewal_reports_the_replication_state() {
    let mut bench = Bench::new(8);
    bench.advance(LEASE / 3);
    bench.state.wake(bench.now);
    let renewal = bench.only_job();
    let renewal_rows = Renewal {
        writes: Ok(()),
        replication: Some(Err("permission denied for function pg_walfile_name".into())),
    };
    bench.done(renewal.id, Ok(Rows::Renewed(renewal_rows)));
    let seen = bench.outputs();
    assert!(seen.health.is_empty());
    assert_eq!(
        seen.replications,
        vec![Err(
            "permission denied for function pg_walfile_name".to_string()
        )]
    );
}

/// A STORE that commits does not clear a failure the renewal's check
/// found (its function revoked: the two flapped every second); only the
/// check does.
#[test]
fn only_the_check_clears_a_failure_the_check_found() {
    let mut bench = Bench::new(8);
    bench.advance(LEASE / 3);
    bench.state.wake(bench.now);
    let renewal = bench.only_job();
    let denied = "permission denied for function pg_logical_emit_message (42501)";
    let failed = Renewal {
        writes: Err(denied.to_string()),
        replication: None,
    };
    bench.done(renewal.id, Ok(Rows::Renewed(failed)));
    assert_eq!(
        bench.outputs().health,
        vec![Health::Unwritable(denied.to_string())]
    );
    bench.store("a", 1, None);
    let write = bench.only_job();
    bench.done(write.id, Ok(Rows::Write(insert_rows("a", stored()))));
    let seen = bench.outputs();
    assert_eq!(written(&seen), vec![(1, Outcome::Stored)]);
    assert!(seen.health.is_empty(), "{:?}", seen.health);
    bench.wake_when_due();
    let renewal = bench.only_job();
    bench.done(renewal.id, Ok(Rows::Renewed(Renewal::default())));
    assert_eq!(bench.outputs().health, vec![Health::Writable]);
}

/// A write job the database refuses for its data (a constraint or a
/// trigger another tool added) is no outage of writes: one poisoned STORE
/// retried flapped readiness.
#[test]
fn a_statement_refused_for_its_data_is_no_write_outage() {
    let mut bench = Bench::new(8);
    for reason in [
        "new row for relation \"jnhp_names\" violates check constraint \"x\" (23514)",
        "poisoned (P0001)",
        "invalid byte sequence (22021)",
    ] {
        bench.store("a", 1, None);
        let write = bench.only_job();
        bench.done(write.id, Err(reason.to_string()));
        assert!(bench.outputs().health.is_empty(), "{reason}");
    }
    bench.store("b", 2, None);
    let jobs = bench.outputs().jobs;
    let write = jobs
        .into_iter()
        .find(|j| matches!(j.work, Work::Write(_)))
        .unwrap_or_else(|| {
            bench.wake_when_due();
            bench.only_job()
        });
    bench.done(write.id, Err("no answer within 3000 ms".into()));
    assert_eq!(
        bench.outputs().health,
        vec![Health::Unwritable("no answer within 3000 ms".to_string())]
    );
}

/// One row refused for its data fails its whole statement: the STOREs it
/// carried are each tried again in a statement of their own, so the
/// refused one holds no other back (a hostile tester's STOREs of good
/// names got `ERROR storage unavailable` behind a poisoned one).
#[test]
fn a_statement_refused_for_its_data_is_split() {
    let mut bench = Bench::new(8);
    bench.store("good", 1, None);
    bench.store("poison", 2, None);
    let job = bench.only_job();
    assert_eq!(write_args(&job).plain.names.len(), 2);
    let refused = "violates check constraint \"no_poison\" (23514)";
    bench.done(job.id, Err(refused.into()));
    assert!(bench.outputs().jobs.is_empty());
    bench.wake_when_due();
    let jobs = bench.outputs().jobs;
    let names: Vec<Vec<Vec<u8>>> = jobs
        .iter()
        .map(|j| write_args(j).plain.names.clone())
        .collect();
    assert_eq!(
        names,
        vec![b"good".to_vec()]
            .into_iter()
            .map(|n| vec![n])
            .chain([vec![b"poison".to_vec()]])
            .collect::<Vec<_>>()
    );
    for job in jobs {
        let name = write_args(&job).plain.names[0].clone();
        match &name[..] {
            b"good" => bench.done(job.id, Ok(Rows::Write(insert_rows("good", stored())))),
            _ => bench.done(job.id, Err(refused.into())),
        }
    }
    assert_eq!(written(&bench.outputs()), vec![(1, Outcome::Stored)]);
}
