//! Tests of the parent module.

use chrono::TimeZone;

use super::*;

const DATE: &str = "Mon, 23 Nov 2026 01:00:00 GMT";

fn check(status: u16, retry_after: Option<&str>, expected: Verdict) {
    assert_eq!(
        classify(status, retry_after, Some(DATE), None),
        expected,
        "status {status}"
    );
}

#[test]
fn every_row_of_the_status_table() {
    let after = |s| Some(Duration::from_secs(s));
    check(200, None, Verdict::Delivered);
    check(201, None, Verdict::Delivered);
    check(204, Some("30"), Verdict::Delivered);
    check(408, None, Verdict::Retry { after: None });
    check(425, Some("5"), Verdict::Retry { after: after(5) });
    check(429, Some("120"), Verdict::Retry { after: after(120) });
    check(500, None, Verdict::Retry { after: None });
    check(502, None, Verdict::Retry { after: None });
    check(
        503,
        Some("Mon, 23 Nov 2026 01:02:00 GMT"),
        Verdict::Retry { after: after(120) },
    );
    check(504, Some("soon"), Verdict::Retry { after: None });
    check(409, Some("10"), Verdict::InProgress { after: after(10) });
    check(409, None, Verdict::InProgress { after: None });
    check(413, None, Verdict::TooLarge);
    check(401, None, Verdict::Paused);
    check(403, Some("60"), Verdict::Paused);
    check(400, None, Verdict::Poison);
    check(404, None, Verdict::Poison);
    check(422, None, Verdict::Poison);
    // Not 4xx, not 2xx: not the readings' fault.
    check(302, None, Verdict::Retry { after: None });
    check(100, None, Verdict::Retry { after: None });
}

#[test]
fn an_http_date_is_read_against_the_answers_date_not_a_wrong_local_clock() {
    let in_1970 = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap();
    // The gateway's clock is far off, but the server's Date makes the wait exact.
    let wait = parse_retry_after("Mon, 23 Nov 2026 01:02:00 GMT", Some(DATE), Some(in_1970));
    assert_eq!(wait, Some(Duration::from_secs(120)));
    // No Date: a trusted local clock is used; an untrusted one (None) gives nothing.
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 1, 1, 30).unwrap();
    assert_eq!(
        parse_retry_after("Mon, 23 Nov 2026 01:02:00 GMT", None, Some(now)),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after("Mon, 23 Nov 2026 01:02:00 GMT", None, None),
        None
    );
    // A date in the past means now.
    assert_eq!(
        parse_retry_after("Mon, 23 Nov 2026 00:59:00 GMT", Some(DATE), None),
        Some(Duration::ZERO)
    );
}

#[test]
fn the_three_http_date_forms_parse() {
    let expected = Utc.with_ymd_and_hms(1994, 11, 6, 8, 49, 37).unwrap();
    for form in [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    ] {
        assert_eq!(parse_http_date(form), Some(expected), "{form}");
    }
    assert_eq!(parse_http_date("yesterday"), None);
}

#[test]
fn backoff_is_full_jitter_under_a_growing_capped_ceiling() {
    let (base, cap) = (Duration::from_secs(5), Duration::from_secs(900));
    assert_eq!(backoff(0, base, cap, 0.0), Duration::ZERO);
    assert_eq!(backoff(0, base, cap, 0.5), Duration::from_millis(2500));
    assert_eq!(backoff(3, base, cap, 0.5), Duration::from_secs(20));
    assert_eq!(
        backoff(10, base, cap, 0.5),
        Duration::from_secs(450),
        "capped at 900 s"
    );
    assert_eq!(backoff(u32::MAX, base, cap, 1.0), cap, "no overflow");
    // The draw is uniform over [0, ceiling): the mean of many is about half of it.
    let mut rng = fastrand::Rng::with_seed(5);
    let n = 20_000;
    let mean = (0..n)
        .map(|_| backoff(2, base, cap, rng.f64()).as_secs_f64())
        .sum::<f64>()
        / f64::from(n);
    assert!((mean - 10.0).abs() < 0.2, "mean {mean}");
    // The server's Retry-After wins, within the cap.
    assert_eq!(
        wait(Some(Duration::from_secs(120)), 0, base, cap, 0.9),
        Duration::from_secs(120)
    );
    assert_eq!(
        wait(Some(Duration::from_secs(86_400)), 0, base, cap, 0.9),
        cap
    );
    assert_eq!(wait(None, 1, base, cap, 0.5), Duration::from_secs(5));
}
