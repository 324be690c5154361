//! The uploader against a scriptable ingest server: every row of the status table,
//! the exact request, hold-back, restarts and shutdown. Library runs use a tuning
//! with millisecond backoff; the binary runs are the real thing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use tidegate::clock::{BootTime, Clock, TestClock};
use tidegate::config;
use tidegate::job::JobContext;
use tidegate::reading::Reading;
use tidegate::store::readings::{self, ClockQuality};
use tidegate::store::upload::{self as buffer, UploadStatus};
use tidegate::store::{self, StoreHandle};
use tidegate::upload::{self, Report, Tuning, UploadError};
use tokio_util::sync::CancellationToken;

use crate::support::agent::{Site, eventually};
use crate::support::ingest::{Answer, Ingest};

const FAST: Tuning = Tuning {
    backoff_base: Duration::from_millis(1),
    backoff_cap: Duration::from_secs(5),
    attempts: 6,
};

/// A gateway with its own state directory, talking to `url`.
struct Gateway {
    dir: tempfile::TempDir,
    ctx: JobContext,
    epoch: String,
}

impl Gateway {
    /// `upload` is the body of the `[upload]` table after its url (and a token file
    /// holding `s3cret`).
    async fn new(url: &str, upload: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("upload.token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let text = format!(
            "[agent]\nid = \"pond-07\"\nsite = \"kagoshima-1\"\nstate_dir = \"{}\"\ntimezone = \"UTC\"\n\
             [upload]\nurl = \"{url}\"\ntoken_file = \"{}\"\n{upload}\n",
            dir.path().join("state").display(),
            token.display()
        );
        Gateway::from_config(dir, &text).await
    }

    async fn from_config(dir: tempfile::TempDir, text: &str) -> Gateway {
        let config = config::parse_str(text, "t.toml").expect("valid config");
        let conn = store::open(&config.agent.state_dir).unwrap();
        let epoch = store::epoch(&conn).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(TestClock::at(2026, 11, 23, 1, 0, 0, true));
        let ctx = JobContext::new(Arc::new(config), clock, StoreHandle::spawn(conn));
        Gateway { dir, ctx, epoch }
    }

    /// Stores `n` good readings as one cycle (plus `bad` failed ones), taken in an
    /// earlier boot on a trusted clock.
    async fn sample(&self, n: usize) {
        self.store(n, ClockQuality::Synced, other_boot()).await;
    }

    async fn store(&self, n: usize, clock: ClockQuality, boot: BootTime) {
        let ts = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
        let cycle: Vec<Reading> = (0..n)
            .map(|i| {
                Reading::good(
                    &format!("pond{}.do", i % 4),
                    ts,
                    7.5 + i as f64 / 100.0,
                    Some("mg/L"),
                )
            })
            .collect();
        self.ctx
            .store
            .call(move |c| readings::insert_cycle(c, &cycle, clock, &boot))
            .await
            .unwrap();
    }

    async fn run(&self) -> Result<Report, UploadError> {
        upload::run_with(&self.ctx, FAST, &CancellationToken::new()).await
    }

    fn key(&self, first: i64, last: i64) -> String {
        format!("pond-07:{}:{first}-{last}", self.epoch)
    }

    async fn query<T: Send + 'static>(
        &self,
        sql: &'static str,
        f: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Vec<T> {
        self.ctx
            .store
            .call(move |c| {
                let mut stmt = c.prepare(sql)?;
                let rows = stmt.query_map([], |r| f(r))?;
                Ok(rows.collect::<Result<Vec<T>, _>>()?)
            })
            .await
            .unwrap()
    }

    async fn pending(&self) -> Vec<i64> {
        self.query("SELECT seq FROM pending ORDER BY seq", |r| r.get(0))
            .await
    }

    async fn batches(&self) -> Vec<(i64, i64, i64, Option<i64>)> {
        self.query(
            "SELECT first_seq, last_seq, attempts, last_status FROM batches ORDER BY first_seq",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .await
    }

    async fn dead(&self) -> Vec<(i64, String, i64)> {
        self.query(
            "SELECT seq, batch, status FROM dead_letter ORDER BY seq",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .await
    }

    async fn status(&self) -> UploadStatus {
        self.ctx.store.call(|c| buffer::status(c)).await.unwrap()
    }
}

fn other_boot() -> BootTime {
    BootTime {
        boot_id: "an-earlier-boot".into(),
        since_boot_ms: 1_000,
    }
}

fn keys(ingest: &Ingest) -> Vec<String> {
    ingest
        .requests()
        .into_iter()
        .map(|r| r.key.unwrap_or_default())
        .collect()
}

fn range(first: i64, last: i64) -> Vec<i64> {
    (first..=last).collect()
}

#[tokio::test]
async fn a_run_drains_every_batch_oldest_first_with_the_contracts_headers_and_json() {
    let ingest = Ingest::start();
    let gw = Gateway::new(&ingest.url(), "batch_size = 5").await;
    gw.sample(11).await;
    let ts = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 1, 5, 0).unwrap();
    let bad = vec![Reading::bad(
        "pond7.temp",
        ts,
        Some("degC"),
        "slave 3: no answer within 500ms",
    )];
    gw.ctx
        .store
        .call(move |c| readings::insert_cycle(c, &bad, ClockQuality::Synced, &other_boot()))
        .await
        .unwrap();

    let report = gw.run().await.unwrap();
    assert_eq!(
        report,
        Report {
            batches: 3,
            readings: 12,
            dead_lettered: 0,
            held_back_from: None
        }
    );
    assert_eq!(keys(&ingest), [gw.key(1, 5), gw.key(6, 10), gw.key(11, 12)]);
    assert_eq!(ingest.delivered(), range(1, 12));
    assert_eq!(
        ingest.connections(),
        1,
        "one kept-alive connection for the run"
    );

    let last = &ingest.requests()[2];
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("POST", "/v1/readings")
    );
    for (name, value) in [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
        ("authorization", "Bearer s3cret"),
        ("idempotency-key", gw.key(11, 12).as_str()),
        (
            "user-agent",
            concat!("tidegate/", env!("CARGO_PKG_VERSION")),
        ),
    ] {
        assert_eq!(last.header(name), Some(value), "{name}");
    }
    assert_eq!(last.raw[..2], [0x1f, 0x8b], "the body is gzip");
    let expected = serde_json::json!({
        "gateway": "pond-07",
        "site": "kagoshima-1",
        "epoch": gw.epoch,
        "batch": gw.key(11, 12),
        "readings": [
            {"seq": 11, "sensor": "pond2.do", "ts": "2026-11-23T01:00:00.000Z", "value": 7.6,
             "unit": "mg/L", "quality": "good", "clock": "synced"},
            {"seq": 12, "sensor": "pond7.temp", "ts": "2026-11-23T01:05:00.000Z", "value": null,
             "unit": "degC", "quality": "bad", "clock": "synced",
             "error": "slave 3: no answer within 500ms"},
        ]
    });
    assert_eq!(last.json.as_ref(), Some(&expected));

    assert!(gw.pending().await.is_empty());
    assert!(gw.batches().await.is_empty());
    let acked: Vec<i64> = gw
        .query(
            "SELECT acked_ms FROM readings WHERE acked_ms IS NOT NULL",
            |r| r.get(0),
        )
        .await;
    assert_eq!(acked.len(), 12);
    let now_ms = gw.ctx.clock.now().wall.timestamp_millis();
    assert!(
        acked
            .iter()
            .all(|ms| (now_ms - 5_000..=now_ms).contains(ms))
    );
    assert_eq!(gw.status().await.last_ok_ms, acked.iter().max().copied());

    // Nothing left: a run sends nothing.
    assert_eq!(gw.run().await.unwrap(), Report::default());
    assert_eq!(ingest.request_count(), 3);
}

#[tokio::test]
async fn influx_goes_as_plain_line_protocol_byte_for_byte_and_no_token_means_no_authorization() {
    let ingest = Ingest::start();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[agent]\nid = \"pond-07\"\nstate_dir = \"{}\"\ntimezone = \"UTC\"\n\
         [upload]\nurl = \"{}\"\nformat = \"influx\"\ngzip = false\n",
        dir.path().join("state").display(),
        ingest.url()
    );
    let gw = Gateway::from_config(dir, &text).await;
    gw.sample(1).await;
    let ts = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 1, 5, 0).unwrap();
    let bad = vec![Reading::bad(
        "pond7.temp",
        ts,
        Some("deg C"),
        "CRC error, twice",
    )];
    gw.ctx
        .store
        .call(move |c| readings::insert_cycle(c, &bad, ClockQuality::Unsynced, &other_boot()))
        .await
        .unwrap();
    gw.run().await.unwrap();

    let request = ingest.requests().pop().unwrap();
    assert_eq!(
        request.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(request.header("content-encoding"), None);
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.raw, request.body, "sent uncompressed");
    assert_eq!(
        request.body_text(),
        format!(
            "tidegate,clock=synced,epoch={e},gateway=pond-07,quality=good,sensor=pond0.do,unit=mg/L value=7.5,seq=1i 1795395600000000000\n\
             tidegate,clock=unsynced,epoch={e},gateway=pond-07,quality=bad,sensor=pond7.temp,unit=deg\\ C seq=2i,error=\"CRC error, twice\" 1795395900000000000\n",
            e = gw.epoch
        )
    );
    assert_eq!(ingest.delivered(), [1, 2]);
}

#[tokio::test]
async fn transient_answers_retry_the_same_batch_byte_for_byte_until_delivered() {
    let ingest = Ingest::start();
    for status in [408, 425, 429, 500, 503] {
        ingest.then(Answer::status(status));
    }
    let gw = Gateway::new(&ingest.url(), "").await;
    gw.sample(3).await;
    let report = gw.run().await.unwrap();
    assert_eq!((report.batches, report.readings), (1, 3));
    let requests = ingest.requests();
    assert_eq!(requests.len(), 6);
    for r in &requests {
        assert_eq!(r.key.as_deref(), Some(gw.key(1, 3).as_str()));
        assert_eq!(r.raw, requests[0].raw, "the same bytes every time");
    }
    assert_eq!(
        requests.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [408, 425, 429, 500, 503, 200].map(Some)
    );
    assert!(gw.pending().await.is_empty());
    let status = gw.status().await;
    assert_eq!((status.consecutive_failures, status.last_error), (0, None));
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_a_network_error_and_retried() {
    let ingest = Ingest::start();
    ingest.then(Answer::close()).then(Answer::close());
    let gw = Gateway::new(&ingest.url(), "").await;
    gw.sample(2).await;
    gw.run().await.unwrap();
    assert_eq!(keys(&ingest), vec![gw.key(1, 2); 3]);
    assert_eq!(ingest.delivered(), [1, 2]);
}

#[tokio::test]
async fn retries_are_bounded_in_a_run_and_the_batch_waits_recorded_for_the_next() {
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/readings", closed.local_addr().unwrap());
    drop(closed);
    let gw = Gateway::new(&url, "").await;
    gw.sample(4).await;
    let error = gw.run().await.unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, UploadError::GaveUp { attempts: 6, .. }),
        "{text}"
    );
    assert!(
        text.contains(&gw.key(1, 4)) && text.contains("cannot connect to 127.0.0.1"),
        "{text}"
    );
    assert_eq!(gw.batches().await, [(1, 4, 6, None)]);
    let status = gw.status().await;
    assert_eq!(status.consecutive_failures, 6);
    assert!(status.last_error.unwrap().starts_with("cannot connect"));
    assert_eq!(gw.pending().await, range(1, 4));
}

#[tokio::test]
async fn a_409_sends_the_batch_again_unchanged() {
    let ingest = Ingest::start();
    ingest.then(Answer::status(409)).then(Answer::status(409));
    let gw = Gateway::new(&ingest.url(), "").await;
    gw.sample(3).await;
    gw.run().await.unwrap();
    let requests = ingest.requests();
    assert_eq!(keys(&ingest), vec![gw.key(1, 3); 3]);
    assert!(
        requests
            .iter()
            .all(|r| r.raw == requests[0].raw && r.seqs == [1, 2, 3])
    );
    assert_eq!(ingest.delivered(), [1, 2, 3]);
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_given_up_on_and_retried() {
    let ingest = Ingest::start();
    let first = std::sync::atomic::AtomicBool::new(true);
    ingest.respond_with(move |_| {
        first
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            .then(|| Answer::ok().after(Duration::from_secs(3)))
    });
    let gw = Gateway::new(&ingest.url(), "timeout = \"300ms\"").await;
    gw.sample(2).await;
    let started = Instant::now();
    gw.run().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(keys(&ingest), vec![gw.key(1, 2); 2]);
    // The server took it the first time too; the key is what lets it drop the second.
    assert_eq!(ingest.delivered(), [1, 2, 1, 2]);
    assert!(gw.pending().await.is_empty());
}

#[tokio::test]
async fn a_backlog_of_many_batches_drains_in_one_run_in_seq_order() {
    let ingest = Ingest::start();
    ingest.keep_bodies(false);
    let gw = Gateway::new(&ingest.url(), "batch_size = 5000").await;
    for _ in 0..4 {
        gw.sample(6_000).await;
    }
    let report = gw.run().await.unwrap();
    assert_eq!((report.batches, report.readings), (5, 24_000));
    assert_eq!(
        ingest.delivered(),
        range(1, 24_000),
        "each reading once, oldest first"
    );
    assert_eq!(
        keys(&ingest),
        [
            (1, 5000),
            (5001, 10_000),
            (10_001, 15_000),
            (15_001, 20_000),
            (20_001, 24_000)
        ]
        .map(|(f, l)| gw.key(f, l))
    );
    assert!(gw.pending().await.is_empty());
}

#[tokio::test]
async fn retry_after_in_seconds_is_waited_for() {
    let ingest = Ingest::start();
    ingest.then(Answer::status(429).header("Retry-After", "1"));
    let gw = Gateway::new(&ingest.url(), "").await;
    gw.sample(1).await;
    gw.run().await.unwrap();
    let r = ingest.requests();
    let gap = r[1].at - r[0].at;
    assert!(
        gap >= Duration::from_secs(1) && gap < Duration::from_secs(3),
        "{gap:?}"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_read_against_the_answers_date() {
    let ingest = Ingest::start();
    // The server's clock is in 1994; the gateway's is in 2026. Only Date makes sense of it.
    ingest.then(
        Answer::status(503)
            .header("Date", "Sun, 06 Nov 1994 08:49:37 GMT")
            .header("Retry-After", "Sun, 06 Nov 1994 08:49:39 GMT"),
    );
    let gw = Gateway::new(&ingest.url(), "").await;
    gw.sample(1).await;
    gw.run().await.unwrap();
    let r = ingest.requests();
    let gap = r[1].at - r[0].at;
    assert!(
        gap >= Duration::from_secs(2) && gap < Duration::from_secs(4),
        "{gap:?}"
    );
}

#[tokio::test]
async fn a_413_halves_the_batch_into_two_new_keys_and_the_batch_size_for_the_run() {
    let ingest = Ingest::start();
    ingest.then(Answer::status(413));
    let gw = Gateway::new(&ingest.url(), "batch_size = 8").await;
    gw.sample(14).await;
    let report = gw.run().await.unwrap();
    assert_eq!((report.readings, report.dead_lettered), (14, 0));
    assert_eq!(
        keys(&ingest),
        [
            gw.key(1, 8),
            gw.key(1, 4),
            gw.key(5, 8),
            gw.key(9, 12),
            gw.key(13, 14)
        ]
    );
    assert_eq!(ingest.delivered(), range(1, 14));
    assert!(gw.dead().await.is_empty());
}

#[tokio::test]
async fn a_413_on_a_single_reading_dead_letters_it_because_it_can_never_fit() {
    let ingest = Ingest::start();
    ingest.then(Answer::status(413).body("payload too large"));
    let gw = Gateway::new(&ingest.url(), "batch_size = 1").await;
    gw.sample(2).await;
    let report = gw.run().await.unwrap();
    assert_eq!((report.readings, report.dead_lettered), (1, 1));
    assert_eq!(gw.dead().await, [(1, gw.key(1, 1), 413)]);
    assert_eq!(ingest.delivered(), [2]);
}

#[tokio::test]
async fn a_401_or_403_pauses_uploading_keeps_the_batch_and_dead_letters_nothing() {
    for status in [401, 403] {
        let ingest = Ingest::start();
        ingest.otherwise(Answer::status(status));
        let gw = Gateway::new(&ingest.url(), "batch_size = 3").await;
        gw.sample(5).await;
        let error = gw.run().await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, UploadError::Paused { .. }), "{text}");
        assert!(
            text.contains(&format!("answered {status}"))
                && text.contains("token")
                && text.contains("clock"),
            "{text}"
        );
        assert_eq!(
            ingest.request_count(),
            1,
            "the run stops at the first {status}"
        );
        assert!(gw.dead().await.is_empty());
        assert_eq!(gw.batches().await, [(1, 3, 1, Some(i64::from(status)))]);
        assert_eq!(gw.pending().await, range(1, 5));
        assert!(gw.status().await.paused.is_some());

        // The token is fixed: the next run sends the same batch and lifts the pause.
        ingest.otherwise(Answer::ok());
        gw.run().await.unwrap();
        assert_eq!(keys(&ingest)[..2], [gw.key(1, 3), gw.key(1, 3)]);
        assert_eq!(gw.status().await.paused, None);
        assert!(gw.pending().await.is_empty());
    }
}

#[tokio::test]
async fn poison_answers_isolate_exactly_the_refused_readings_and_the_rest_is_delivered() {
    let ingest = Ingest::start();
    ingest.refuse([3, 17, 18], 422);
    ingest.refuse([40], 400);
    let gw = Gateway::new(&ingest.url(), "batch_size = 50").await;
    gw.sample(45).await;
    let report = gw.run().await.unwrap();
    assert_eq!((report.readings, report.dead_lettered), (41, 4));

    let dead = gw.dead().await;
    assert_eq!(
        dead.iter()
            .map(|(seq, _, status)| (*seq, *status))
            .collect::<Vec<_>>(),
        [(3, 422), (17, 422), (18, 422), (40, 400)]
    );
    for (seq, key, _) in &dead {
        assert_eq!(
            key,
            &gw.key(*seq, *seq),
            "dead-lettered as a batch of its own"
        );
    }
    let response: String = gw
        .query("SELECT response FROM dead_letter WHERE seq = 17", |r| {
            r.get(0)
        })
        .await
        .remove(0);
    assert_eq!(response, "{\"error\":\"reading 17 refused\"}");

    let mut delivered = ingest.delivered();
    delivered.sort_unstable();
    let expected: Vec<i64> = (1..=45).filter(|s| ![3, 17, 18, 40].contains(s)).collect();
    assert_eq!(delivered, expected, "every other reading, exactly once");
    assert!(gw.pending().await.is_empty());
    assert!(gw.batches().await.is_empty());
    // Bisection: at most 1 + 2·k·⌈log2 n⌉ requests for k refused readings.
    assert!(
        ingest.request_count() <= 1 + 2 * 4 * 6,
        "{}",
        ingest.request_count()
    );
}

/// The operator fixes the server and requeues: the dead letters go out again, in a
/// new batch with the readings that came since, and are delivered.
#[tokio::test]
async fn requeued_dead_letters_are_delivered_once_the_server_takes_them() {
    let ingest = Ingest::start();
    ingest.refuse([3, 7], 422);
    let gw = Gateway::new(&ingest.url(), "batch_size = 50").await;
    gw.sample(10).await;
    gw.run().await.unwrap();
    assert_eq!(gw.dead().await.len(), 2);
    assert!(
        gw.pending().await.is_empty(),
        "dead letters are not pending"
    );

    // The server is fixed; meanwhile new readings came.
    ingest.respond_with(|_| Some(Answer::ok()));
    let before = ingest.request_count();
    gw.sample(5).await;
    let requeued = gw
        .ctx
        .store
        .call(tidegate::store::inspect::requeue_dead)
        .await
        .unwrap();
    assert_eq!(requeued, 2);
    assert_eq!(gw.pending().await, [3, 7, 11, 12, 13, 14, 15]);
    let report = gw.run().await.unwrap();
    assert_eq!((report.readings, report.dead_lettered), (7, 0));
    let after = &ingest.requests()[before..];
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].key.as_deref(),
        Some(gw.key(3, 15).as_str()),
        "one new batch, under a key never refused"
    );
    assert_eq!(after[0].seqs, [3, 7, 11, 12, 13, 14, 15]);
    assert!(gw.dead().await.is_empty());
    assert!(gw.pending().await.is_empty());
}

#[tokio::test]
async fn a_server_that_refuses_everything_stops_the_run_before_the_backlog_is_dead_lettered() {
    let ingest = Ingest::start();
    ingest.otherwise(Answer::status(404).body("no such route"));
    let gw = Gateway::new(&ingest.url(), "batch_size = 1000").await;
    gw.sample(1000).await;
    let error = gw.run().await.unwrap_err();
    assert!(
        matches!(error, UploadError::RefusesEverything { dead: 16, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("check upload.url"));
    assert_eq!(gw.dead().await.len(), 16);
    assert_eq!(gw.pending().await.len(), 984);
}

#[tokio::test]
async fn correctable_readings_wait_for_correction_and_others_go_at_once() {
    let ingest = Ingest::start();
    let gw = Gateway::new(&ingest.url(), "").await;
    let now = BootTime::now();
    // This boot, an untrusted clock, just now: may still be corrected.
    gw.store(2, ClockQuality::Unsynced, now.clone()).await;
    let report = gw.run().await.unwrap();
    assert_eq!(report.held_back_from, Some(1));
    assert_eq!(
        ingest.request_count(),
        0,
        "nothing sent while they may be corrected"
    );
    assert!(gw.batches().await.is_empty());

    // The clock became trusted: the scheduler re-stamps them; now they go, corrected.
    let boot_id = now.boot_id.clone();
    gw.ctx
        .store
        .call(move |c| readings::correct_boot(c, &boot_id, 1_700_000_000_000))
        .await
        .unwrap();
    gw.run().await.unwrap();
    let sent = ingest.requests().remove(0).json.unwrap();
    assert_eq!(sent["readings"][0]["clock"], "corrected");
    assert_eq!(ingest.delivered(), [1, 2]);
}

#[tokio::test]
async fn an_hour_on_correctable_readings_go_as_unsynced_and_earlier_boots_never_wait() {
    let ingest = Ingest::start();
    let gw = Gateway::new(&ingest.url(), "").await;
    let now = BootTime::now();
    let hour_ago = BootTime {
        boot_id: now.boot_id.clone(),
        since_boot_ms: now.since_boot_ms - buffer::HOLD_BACK_MS - 1_000,
    };
    gw.store(1, ClockQuality::Unsynced, hour_ago).await;
    gw.store(1, ClockQuality::Unsynced, other_boot()).await;
    gw.run().await.unwrap();
    let sent = ingest.requests().remove(0).json.unwrap();
    assert_eq!(sent["readings"][0]["clock"], "unsynced");
    assert_eq!(sent["readings"][1]["clock"], "unsynced");
    assert_eq!(ingest.delivered(), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_at_once_and_the_batch_goes_again_with_the_same_key() {
    let ingest = Ingest::start();
    ingest.then(Answer::hang());
    let gw = Arc::new(Gateway::new(&ingest.url(), "").await);
    gw.sample(3).await;
    let cancel = CancellationToken::new();
    let running = {
        let (gw, cancel) = (Arc::clone(&gw), cancel.clone());
        tokio::spawn(async move { upload::run_with(&gw.ctx, FAST, &cancel).await })
    };
    ingest.arrived(1, Duration::from_secs(5)).await;
    let stopped = Instant::now();
    cancel.cancel();
    let result = running.await.unwrap();
    assert!(matches!(result, Err(UploadError::Stopped)), "{result:?}");
    assert!(stopped.elapsed() < Duration::from_millis(500));
    assert_eq!(gw.batches().await, [(1, 3, 0, None)]);

    gw.run().await.unwrap();
    assert_eq!(keys(&ingest), [gw.key(1, 3), gw.key(1, 3)]);
    assert_eq!(ingest.delivered(), [1, 2, 3]);
}

#[tokio::test]
async fn an_unreadable_token_file_fails_the_run_and_sends_nothing() {
    let ingest = Ingest::start();
    let gw = Gateway::new(&ingest.url(), "").await;
    gw.sample(1).await;
    std::fs::remove_file(gw.dir.path().join("upload.token")).unwrap();
    let error = gw.run().await.unwrap_err().to_string();
    assert!(
        error.starts_with("cannot read upload.token_file "),
        "{error}"
    );
    assert_eq!(ingest.request_count(), 0);
    assert_eq!(gw.status().await.last_error, Some(error));
}

#[tokio::test]
async fn a_url_that_cannot_be_used_is_reported_without_its_password() {
    let gw = Gateway::new("http://farm:hunter2@127.0.0.1:99999/v1", "").await;
    gw.sample(1).await;
    let error = gw.run().await.unwrap_err().to_string();
    assert!(
        error.starts_with("cannot set up uploading to http://farm:***@127.0.0.1:99999/v1: "),
        "{error}"
    );
    assert!(!error.contains("hunter2"));
}

// The real binary.

/// A site whose `[upload]` goes to `url`, with `n` readings already stored.
fn site_with_readings(url: &str, rest: &str, n: usize) -> Site {
    let site = Site::new(&format!("[upload]\nurl = \"{url}\"\n{rest}"));
    let mut conn = store::open(&site.state_dir()).unwrap();
    let ts = chrono::Utc.with_ymd_and_hms(2026, 11, 23, 1, 0, 0).unwrap();
    let cycle: Vec<Reading> = (0..n)
        .map(|i| Reading::good("pond7.do", ts, i as f64, Some("mg/L")))
        .collect();
    readings::insert_cycle(&mut conn, &cycle, ClockQuality::Synced, &other_boot()).unwrap();
    site
}

fn epoch_of(site: &Site) -> String {
    store::epoch(&store::open(&site.state_dir()).unwrap()).unwrap()
}

#[test]
fn job_run_upload_delivers_and_a_batch_cut_off_by_kill_9_goes_again_with_the_same_key() {
    let ingest = Ingest::start();
    ingest.then(Answer::hang());
    let site = site_with_readings(&ingest.url(), "batch_size = 4", 6);
    let mut first = std::process::Command::new(crate::support::agent::binary())
        .args(["job", "run", "upload", "--config"])
        .arg(site.config())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ingest.wait_for(1, Duration::from_secs(20));
    first.kill().unwrap();
    first.wait().unwrap();

    let (code, out, err) = site.cli(&["job", "run", "upload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("job upload: success"), "{out}");
    let epoch = epoch_of(&site);
    let requests = ingest.requests();
    assert_eq!(
        keys(&ingest),
        [
            format!("test-gw:{epoch}:1-4"),
            format!("test-gw:{epoch}:1-4"),
            format!("test-gw:{epoch}:5-6")
        ]
    );
    assert_eq!(
        requests[0].seqs, requests[1].seqs,
        "the same readings after the restart"
    );
    assert_eq!(requests[0].body, requests[1].body);
    assert_eq!(ingest.delivered(), range(1, 6));
    let pending = readings::pending_count(&store::open(&site.state_dir()).unwrap()).unwrap();
    assert_eq!(pending, 0);
}

#[test]
fn job_run_upload_on_a_401_fails_with_what_to_check() {
    let ingest = Ingest::start();
    ingest.otherwise(Answer::status(401));
    let site = site_with_readings(&ingest.url(), "", 2);
    let (code, out, err) = site.cli(&["job", "run", "upload"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("job upload: failure"), "{out}");
    assert!(
        out.contains("401 Unauthorized") && out.contains("token") && out.contains("clock"),
        "{out}"
    );
    assert!(err.contains("uploading paused"), "{err}");
}

#[test]
fn without_an_upload_section_the_job_succeeds_and_readings_stay_buffered() {
    let site = Site::new("");
    let (code, out, err) = site.cli(&["job", "run", "upload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("no [upload] section; readings stay buffered"),
        "{err}"
    );
}

#[test]
fn the_agent_stops_cleanly_during_an_upload_and_the_batch_is_kept() {
    let ingest = Ingest::start();
    ingest.then(Answer::hang());
    let site = site_with_readings(&ingest.url(), "[jobs.upload]\nevery = \"1s\"", 3);
    let mut agent = site.start();
    ingest.wait_for(1, Duration::from_secs(20));
    let asked = Instant::now();
    agent.signal(libc::SIGTERM);
    assert_eq!(
        agent.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        agent.log()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let log = agent.log();
    assert!(log.contains("upload stopped at shutdown"), "{log}");
    let conn = store::open(&site.state_dir()).unwrap();
    let recorded: (i64, i64) = conn
        .query_row("SELECT first_seq, last_seq FROM batches", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(recorded, (1, 3));
    drop(conn);

    // Started again, the agent sends that batch under the same key.
    let agent = site.start();
    eventually(Duration::from_secs(20), "the batch delivered", || {
        ingest.delivered() == [1, 2, 3]
    });
    drop(agent);
    let epoch = epoch_of(&site);
    assert_eq!(keys(&ingest), vec![format!("test-gw:{epoch}:1-3"); 2]);
}
