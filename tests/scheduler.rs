//! The scheduler's plan driven through simulated time: grids, stalls, downtime, clock
//! steps, DST, overlap, slots, pause and one-shots.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Duration as Span;
use tidegate::config::{Overlap, Trigger};
use tidegate::scheduler::plan::Remembered;
use tidegate::store::jobs::Lifecycle;

use crate::support::sim::{Sim, cron, every, job, utc};

const MIN: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

#[test]
fn interval_stays_on_wall_aligned_grid_for_a_week() {
    let mut sample = job("sample", every(5 * MIN));
    sample.jitter = Duration::ZERO;
    let mut sim = Sim::new(&[sample], "UTC", utc(2026, 11, 23, 10, 2, 17), true);
    // Runs take 40 s: they must not push later fires.
    sim.run_time
        .insert("sample".into(), Duration::from_secs(40));
    sim.run_for(Duration::from_secs(7 * DAY));
    let starts = sim.starts_of("sample");
    assert_eq!(starts.len(), 7 * 288, "one fire per 5 minutes for a week");
    assert_eq!(starts[0].wall, utc(2026, 11, 23, 10, 5, 0));
    for s in &starts {
        assert_eq!(
            s.wall.timestamp_millis() % 300_000,
            0,
            "fire off the wall grid at {}",
            s.wall
        );
        assert_eq!(s.nominal, Some(s.wall));
    }
    assert_eq!(sim.missed_of("sample"), 0);
}

#[test]
fn interval_on_untrusted_clock_keeps_its_monotonic_grid() {
    let mut sim = Sim::new(
        &[job("heartbeat", every(30))],
        "UTC",
        utc(1970, 1, 1, 0, 0, 12),
        false,
    );
    sim.run_time
        .insert("heartbeat".into(), Duration::from_millis(2500));
    sim.run_for(Duration::from_secs(DAY));
    let starts = sim.starts_of("heartbeat");
    assert_eq!(starts.len(), 2880);
    for (k, s) in starts.iter().enumerate() {
        let expected = 10_000 + (k as i64 + 1) * 30_000;
        assert_eq!(s.mono_ms, expected, "fire {k} drifted");
        assert_eq!(
            s.nominal, None,
            "no nominal wall time on an untrusted clock"
        );
    }
}

#[test]
fn jitter_delays_each_fire_but_never_moves_the_grid() {
    let mut upload = job("upload", every(HOUR));
    upload.jitter = Duration::from_secs(10 * MIN);
    let mut sim = Sim::new(&[upload], "UTC", utc(2026, 11, 23, 0, 30, 0), true);
    sim.run_for(Duration::from_secs(30 * DAY));
    let starts = sim.starts_of("upload");
    assert_eq!(starts.len(), 30 * 24);
    let mut total = 0i64;
    for s in &starts {
        let nominal = s.nominal.expect("trusted clock");
        assert_eq!(nominal.timestamp() % 3600, 0, "nominal stays on the hour");
        let delay = (s.wall - nominal).num_milliseconds();
        assert!(
            (0..=600_000).contains(&delay),
            "jitter {delay} ms out of range"
        );
        total += delay;
    }
    let mean = total / starts.len() as i64;
    assert!(
        (240_000..=360_000).contains(&mean),
        "mean jitter {mean} ms is not about half of 10 min"
    );
}

#[test]
fn a_stall_fires_once_not_a_burst() {
    let mut sim = Sim::new(
        &[job("sample", every(5 * MIN))],
        "UTC",
        utc(2026, 11, 23, 0, 0, 0),
        true,
    );
    sim.run_for(Duration::from_secs(HOUR));
    assert_eq!(sim.starts_of("sample").len(), 12);
    // The process is frozen for an hour and ten seconds.
    sim.stall(Duration::from_secs(HOUR + 10));
    sim.run_for(Duration::from_secs(1));
    let starts = sim.starts_of("sample");
    assert_eq!(starts.len(), 13, "one coalesced run after the stall");
    assert_eq!(sim.missed_of("sample"), 11);
    sim.run_for(Duration::from_secs(HOUR));
    let after: Vec<_> = sim.starts_of("sample").into_iter().skip(13).collect();
    assert_eq!(after.len(), 12);
    assert!(
        after.iter().all(|s| s.wall.timestamp() % 300 == 0),
        "back on the grid"
    );
}

fn remembered(job: &str, last: chrono::DateTime<chrono::Utc>) -> BTreeMap<String, Remembered> {
    BTreeMap::from([(
        job.to_string(),
        Remembered {
            state: Some(Lifecycle::Active),
            last_nominal: Some(last),
        },
    )])
}

#[test]
fn six_hour_downtime_runs_once_and_counts_the_rest_missed() {
    // The last upload ran at 10:00; the agent comes back at 16:20.
    let memory = remembered("upload", utc(2026, 11, 23, 10, 0, 0));
    let mut sim = Sim::remembering(
        &[job("upload", every(HOUR))],
        "UTC",
        utc(2026, 11, 23, 16, 20, 0),
        true,
        &memory,
        4,
    );
    sim.run_for(Duration::from_secs(HOUR));
    let starts = sim.starts_of("upload");
    assert_eq!(starts.len(), 2, "one catch-up run, then 17:00");
    assert_eq!(starts[0].wall, utc(2026, 11, 23, 16, 20, 0));
    assert_eq!(starts[0].nominal, Some(utc(2026, 11, 23, 16, 0, 0)));
    assert_eq!(starts[1].wall, utc(2026, 11, 23, 17, 0, 0));
    assert_eq!(sim.missed_of("upload"), 5, "11:00 to 15:00 were missed");
}

#[test]
fn downtime_past_the_misfire_grace_runs_nothing() {
    let memory = remembered("upload", utc(2026, 11, 23, 10, 0, 0));
    let mut upload = job("upload", every(HOUR));
    upload.misfire_grace = Some(Duration::from_secs(10 * MIN));
    let mut sim = Sim::remembering(
        &[upload],
        "UTC",
        utc(2026, 11, 23, 16, 20, 0),
        true,
        &memory,
        4,
    );
    sim.run_for(Duration::from_secs(30 * MIN));
    assert!(sim.starts_of("upload").is_empty());
    assert_eq!(sim.missed_of("upload"), 6);
}

#[test]
fn downtime_without_coalesce_runs_each_fire_within_grace() {
    let memory = remembered("report", utc(2026, 11, 23, 10, 0, 0));
    let mut report = job("report", every(HOUR));
    report.coalesce = false;
    report.misfire_grace = Some(Duration::from_secs(3 * HOUR));
    let mut sim = Sim::remembering(
        &[report],
        "UTC",
        utc(2026, 11, 23, 16, 20, 0),
        true,
        &memory,
        4,
    );
    sim.run_for(Duration::from_secs(30 * MIN));
    // 14:00, 15:00 and 16:00 are within three hours; 11:00-13:00 are not.
    assert_eq!(sim.starts_of("report").len(), 3);
    assert_eq!(sim.missed_of("report"), 3);
}

#[test]
fn calendar_downtime_catches_up_once() {
    let memory = remembered("cleanup", utc(2026, 11, 20, 3, 30, 0));
    let mut sim = Sim::remembering(
        &[job("cleanup", cron("30 3 * * *"))],
        "UTC",
        utc(2026, 11, 23, 9, 0, 0),
        true,
        &memory,
        4,
    );
    sim.run_for(Duration::from_secs(DAY));
    let starts = sim.starts_of("cleanup");
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0].nominal, Some(utc(2026, 11, 23, 3, 30, 0)));
    assert_eq!(starts[0].wall, utc(2026, 11, 23, 9, 0, 0));
    assert_eq!(starts[1].wall, utc(2026, 11, 24, 3, 30, 0));
    assert_eq!(sim.missed_of("cleanup"), 2, "the 21st and 22nd");
}

#[test]
fn cron_fires_once_at_the_right_instants_across_berlin_dst() {
    let jobs = [
        job("fixed", cron("30 2 * * *")),
        job("stepped", cron("*/15 * * * *")),
    ];
    // Saturday before the spring-forward night.
    let mut sim = Sim::new(&jobs, "Europe/Berlin", utc(2026, 3, 28, 12, 0, 0), true);
    sim.run_for(Duration::from_secs(2 * DAY));
    let fixed: Vec<_> = sim.starts_of("fixed").iter().map(|s| s.wall).collect();
    // 02:30 does not exist on 29 March: the job runs at 03:00 CEST (01:00 UTC), once.
    assert_eq!(
        fixed,
        vec![utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 30, 0)]
    );
    let stepped = sim.starts_of("stepped");
    assert!(stepped.iter().all(|s| s.wall.timestamp() % 900 == 0));
    // Every real quarter hour of the 48: local 02:00-02:45 do not exist, but the real
    // instants they would have been are 03:00-03:45 CEST, which match.
    assert_eq!(stepped.len(), 48 * 4);

    let mut sim = Sim::new(&jobs, "Europe/Berlin", utc(2026, 10, 24, 12, 0, 0), true);
    sim.run_for(Duration::from_secs(2 * DAY));
    let fixed: Vec<_> = sim.starts_of("fixed").iter().map(|s| s.wall).collect();
    // 02:30 happens twice on 25 October; the job runs at the first (CEST, 00:30 UTC).
    assert_eq!(
        fixed,
        vec![utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 26, 1, 30, 0)]
    );
    let stepped = sim.starts_of("stepped");
    assert_eq!(
        stepped.len(),
        48 * 4,
        "every real quarter hour, the repeated hour included"
    );
    let mut walls: Vec<_> = stepped.iter().map(|s| s.wall).collect();
    walls.dedup();
    assert_eq!(walls.len(), stepped.len(), "no instant fires twice");
}

#[test]
fn weekday_zero_and_seven_are_sunday_and_days_are_ored() {
    let jobs = [
        job("sun0", cron("0 12 * * 0")),
        job("sun7", cron("0 12 * * 7")),
        job("either", cron("0 12 1 * mon")),
    ];
    // 2026-06-01 is a Monday.
    let mut sim = Sim::new(&jobs, "UTC", utc(2026, 5, 25, 0, 0, 0), true);
    sim.run_for(Duration::from_secs(21 * DAY));
    let days = |name: &str| -> Vec<String> {
        sim.starts_of(name)
            .iter()
            .map(|s| s.wall.format("%m-%d %a").to_string())
            .collect()
    };
    assert_eq!(days("sun0"), ["05-31 Sun", "06-07 Sun", "06-14 Sun"]);
    assert_eq!(days("sun7"), days("sun0"));
    // 1 June is a Monday and the 1st: one fire, not two.
    assert_eq!(days("either"), ["05-25 Mon", "06-01 Mon", "06-08 Mon"]);

    let mut sim = Sim::new(
        &[job("either", cron("0 12 1 * mon"))],
        "UTC",
        utc(2026, 6, 20, 0, 0, 0),
        true,
    );
    sim.run_for(Duration::from_secs(20 * DAY));
    let days: Vec<String> = sim
        .starts_of("either")
        .iter()
        .map(|s| s.wall.format("%m-%d %a").to_string())
        .collect();
    // The 1st of July is a Wednesday: it fires by day of month, the Mondays by weekday.
    assert_eq!(days, ["06-22 Mon", "06-29 Mon", "07-01 Wed", "07-06 Mon"]);
}

#[test]
fn wall_clock_step_forward_fifty_years_neither_bursts_nor_stalls() {
    let jobs = [
        job("sample", every(5 * MIN)),
        job("report", cron("*/15 * * * *")),
    ];
    let mut sim = Sim::new(&jobs, "UTC", utc(2026, 11, 23, 0, 0, 0), true);
    sim.run_for(Duration::from_secs(HOUR));
    let (samples, reports) = (sim.starts_of("sample").len(), sim.starts_of("report").len());
    assert_eq!((samples, reports), (12, 4));
    sim.step_wall(Span::days(365 * 50));
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.steps.len(), 1);
    assert!(
        sim.starts_of("report").len() <= reports + 1,
        "at most one catch-up run"
    );
    assert_eq!(sim.starts_of("sample").len(), samples, "no interval burst");
    sim.run_for(Duration::from_secs(HOUR));
    let sample_after: Vec<_> = sim.starts_of("sample").into_iter().skip(samples).collect();
    assert!(
        (11..=12).contains(&sample_after.len()),
        "sample keeps its pace: {}",
        sample_after.len()
    );
    assert!(
        sample_after.iter().all(|s| s.wall.timestamp() % 300 == 0),
        "re-aligned to the new wall clock"
    );
    let report_after = sim.starts_of("report").len() - reports;
    assert!(
        (4..=5).contains(&report_after),
        "report keeps firing: {report_after}"
    );
}

#[test]
fn wall_clock_step_back_an_hour_does_not_stall() {
    let jobs = [
        job("sample", every(5 * MIN)),
        job("report", cron("*/15 * * * *")),
    ];
    let mut sim = Sim::new(&jobs, "UTC", utc(2026, 11, 23, 9, 50, 0), true);
    sim.run_for(Duration::from_secs(HOUR));
    let (samples, reports) = (sim.starts_of("sample").len(), sim.starts_of("report").len());
    sim.step_wall(Span::hours(-1));
    sim.run_for(Duration::from_secs(20 * MIN));
    assert_eq!(sim.steps, vec![-3_600_000]);
    assert_eq!(
        sim.starts_of("sample").len() - samples,
        4,
        "intervals go on"
    );
    assert!(
        sim.starts_of("report").len() - reports >= 1,
        "cron plans from the corrected clock"
    );
    for s in sim.starts_of("report").iter().skip(reports) {
        assert_eq!(s.wall.timestamp() % 900, 0);
    }
}

#[test]
fn calendar_jobs_wait_for_a_trusted_clock() {
    let jobs = [
        job("report", cron("0 * * * *")),
        job("heartbeat", every(30)),
    ];
    // Booted with a 1970 clock: intervals run, calendar jobs wait.
    let mut sim = Sim::new(&jobs, "UTC", utc(1970, 1, 1, 0, 0, 10), false);
    sim.run_for(Duration::from_secs(3 * HOUR));
    assert!(sim.starts_of("report").is_empty());
    assert_eq!(sim.next_due.get("report"), Some(&None));
    assert_eq!(sim.starts_of("heartbeat").len(), 360);
    // NTP corrects and synchronises the clock.
    sim.step_wall(utc(2026, 11, 23, 12, 40, 0) - sim.wall());
    sim.trusted = true;
    sim.run_for(Duration::from_secs(2 * HOUR));
    let walls: Vec<_> = sim.starts_of("report").iter().map(|s| s.wall).collect();
    assert_eq!(
        walls,
        vec![utc(2026, 11, 23, 13, 0, 0), utc(2026, 11, 23, 14, 0, 0)]
    );
    assert_eq!(
        sim.missed_of("report"),
        0,
        "a clock correction is not downtime"
    );
}

#[test]
fn overlap_skip_drops_fires_while_running_and_counts_them() {
    let mut sim = Sim::new(
        &[job("slow", every(MIN))],
        "UTC",
        utc(2026, 11, 23, 0, 0, 30),
        true,
    );
    sim.run_time.insert("slow".into(), Duration::from_secs(150));
    sim.run_for(Duration::from_secs(10 * MIN));
    let walls: Vec<_> = sim
        .starts_of("slow")
        .iter()
        .map(|s| s.wall.format("%H:%M:%S").to_string())
        .collect();
    assert_eq!(walls, ["00:01:00", "00:04:00", "00:07:00", "00:10:00"]);
    assert_eq!(sim.skipped_of("slow"), 6);
}

#[test]
fn overlap_queue_runs_one_waiting_fire_after_the_current_run() {
    let mut slow = job("slow", every(MIN));
    slow.overlap = Overlap::Queue;
    let mut sim = Sim::new(&[slow], "UTC", utc(2026, 11, 23, 0, 0, 30), true);
    sim.run_time.insert("slow".into(), Duration::from_secs(150));
    sim.run_for(Duration::from_secs(10 * MIN));
    let walls: Vec<_> = sim
        .starts_of("slow")
        .iter()
        .map(|s| s.wall.format("%H:%M:%S").to_string())
        .collect();
    // Each run ends 2.5 min after it starts and the waiting fire starts at once.
    assert_eq!(walls, ["00:01:00", "00:03:30", "00:06:00", "00:08:30"]);
    // Ten fires: four ran, the 00:09 one waits, and the five that found one already
    // waiting were skipped.
    assert_eq!(sim.skipped_of("slow"), 5, "at most one fire waits");
}

#[test]
fn max_running_makes_fires_wait_and_the_wait_counts_against_grace() {
    let mut jobs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| job(n, every(HOUR)))
        .collect();
    jobs[2].misfire_grace = Some(Duration::from_secs(30));
    let mut late = job("d", every(HOUR));
    late.misfire_grace = Some(Duration::from_secs(10 * MIN));
    jobs.push(late);
    let mut sim = Sim::remembering(
        &jobs,
        "UTC",
        utc(2026, 11, 23, 0, 30, 0),
        true,
        &BTreeMap::new(),
        2,
    );
    for name in ["a", "b", "c", "d"] {
        sim.run_time
            .insert(name.into(), Duration::from_secs(2 * MIN));
    }
    sim.run_for(Duration::from_secs(HOUR));
    let at = |n: &str| {
        sim.starts_of(n)
            .iter()
            .map(|s| s.wall.format("%H:%M").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(at("a"), ["01:00"]);
    assert_eq!(at("b"), ["01:00"]);
    assert!(at("c").is_empty(), "c waited past its 30 s grace");
    assert_eq!(sim.missed_of("c"), 1);
    assert_eq!(at("d"), ["01:02"], "d waited for a slot within its grace");
}

#[test]
fn pause_stops_fires_and_resume_returns_to_the_grid_without_missed_counts() {
    let mut sim = Sim::new(
        &[job("sample", every(5 * MIN))],
        "UTC",
        utc(2026, 11, 23, 0, 0, 0),
        true,
    );
    sim.run_for(Duration::from_secs(30 * MIN));
    assert_eq!(sim.starts_of("sample").len(), 6);
    let actions = sim.plan.pause("sample").unwrap();
    assert!(!actions.is_empty());
    sim.run_for(Duration::from_secs(HOUR));
    assert_eq!(sim.starts_of("sample").len(), 6, "paused jobs do not fire");
    assert_eq!(sim.plan.state("sample"), Some(Lifecycle::Paused));
    let now = sim.now();
    sim.plan.resume("sample", now).unwrap();
    sim.run_for(Duration::from_secs(12 * MIN));
    let starts = sim.starts_of("sample");
    assert_eq!(starts.len(), 8);
    assert_eq!(starts[6].wall, utc(2026, 11, 23, 1, 35, 0));
    assert_eq!(sim.missed_of("sample"), 0);
    assert!(sim.plan.pause("nope").is_err());
}

#[test]
fn a_one_shot_runs_once_and_completes() {
    let at = utc(2026, 12, 25, 1, 0, 0);
    let mut sim = Sim::new(
        &[job("xmas", Some(Trigger::At(at)))],
        "Asia/Tokyo",
        utc(2026, 12, 24, 0, 0, 0),
        true,
    );
    sim.run_for(Duration::from_secs(3 * DAY));
    let starts = sim.starts_of("xmas");
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].wall, at);
    assert_eq!(sim.plan.state("xmas"), Some(Lifecycle::Completed));
    assert_eq!(sim.states.get("xmas"), Some(&Lifecycle::Completed));
}

#[test]
fn a_one_shot_that_fails_is_failed_and_a_finished_one_stays_finished() {
    let at = utc(2026, 12, 25, 1, 0, 0);
    let mut sim = Sim::new(
        &[job("xmas", Some(Trigger::At(at)))],
        "UTC",
        utc(2026, 12, 24, 0, 0, 0),
        true,
    );
    sim.fail.insert("xmas".into(), true);
    sim.run_for(Duration::from_secs(2 * DAY));
    assert_eq!(sim.plan.state("xmas"), Some(Lifecycle::Failed));

    let memory = BTreeMap::from([(
        "xmas".to_string(),
        Remembered {
            state: Some(Lifecycle::Completed),
            last_nominal: Some(at),
        },
    )]);
    let mut sim = Sim::remembering(
        &[job("xmas", Some(Trigger::At(at)))],
        "UTC",
        utc(2026, 12, 26, 0, 0, 0),
        true,
        &memory,
        4,
    );
    sim.run_for(Duration::from_secs(DAY));
    assert!(
        sim.starts_of("xmas").is_empty(),
        "a completed one-shot does not run again after a restart"
    );

    // Moved to a new time, it is a new one-shot.
    let later = utc(2026, 12, 31, 15, 0, 0);
    let mut sim = Sim::remembering(
        &[job("xmas", Some(Trigger::At(later)))],
        "UTC",
        utc(2026, 12, 26, 0, 0, 0),
        true,
        &memory,
        4,
    );
    sim.run_for(Duration::from_secs(7 * DAY));
    let walls: Vec<_> = sim.starts_of("xmas").iter().map(|s| s.wall).collect();
    assert_eq!(walls, vec![later]);
    assert_eq!(sim.plan.state("xmas"), Some(Lifecycle::Completed));

    // Moved to a time before the one it fired at: nothing to run, and it says so.
    let earlier = utc(2026, 12, 20, 0, 0, 0);
    let sim = Sim::remembering(
        &[job("xmas", Some(Trigger::At(earlier)))],
        "UTC",
        utc(2026, 12, 26, 0, 0, 0),
        true,
        &memory,
        4,
    );
    assert_eq!(sim.plan.state("xmas"), Some(Lifecycle::Completed));
}

#[test]
fn start_and_end_bound_the_schedule() {
    let mut window = job("window", every(HOUR));
    window.start = Some(utc(2026, 11, 23, 3, 0, 0));
    window.end = Some(utc(2026, 11, 23, 6, 0, 0));
    let mut sim = Sim::new(&[window], "UTC", utc(2026, 11, 23, 0, 10, 0), true);
    sim.run_for(Duration::from_secs(DAY));
    let hours: Vec<_> = sim
        .starts_of("window")
        .iter()
        .map(|s| s.wall.format("%H:%M").to_string())
        .collect();
    assert_eq!(hours, ["03:00", "04:00", "05:00", "06:00"]);
    assert_eq!(sim.plan.state("window"), Some(Lifecycle::Completed));
}

#[test]
fn a_manual_run_starts_now_and_respects_a_running_job() {
    let mut sim = Sim::new(
        &[job("cleanup", None)],
        "UTC",
        utc(2026, 11, 23, 0, 0, 0),
        true,
    );
    sim.run_for(Duration::from_secs(HOUR));
    assert!(
        sim.starts_of("cleanup").is_empty(),
        "no trigger: manual only"
    );
    let now = sim.now();
    sim.plan.run_now("cleanup", now).unwrap();
    assert!(
        sim.plan.run_now("cleanup", now).is_err(),
        "one waiting run at a time"
    );
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.starts_of("cleanup").len(), 1);
    assert!(sim.plan.run_now("missing", now).is_err());
}

/// The async shell around the plan, in real time: it runs due jobs, records them, and
/// obeys pause, resume and run-now through its handle.
#[tokio::test]
async fn the_shell_records_runs_and_obeys_its_handle() {
    use tidegate::clock::TestClock;
    use tidegate::store::jobs as job_store;

    let clock = TestClock::new(tidegate::clock::wall_now(), true);
    let shell = Shell::start("[jobs.heartbeat]\nevery = \"1s\"\n", clock).await;
    let (handle, store) = (shell.handle.clone(), shell.store.clone());
    let record = |name: &'static str| {
        let store = store.clone();
        async move {
            store
                .call(move |c| job_store::get(c, name))
                .await
                .unwrap()
                .unwrap()
        }
    };

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let runs = record("heartbeat").await.runs;
    assert!((3..=4).contains(&runs), "about one run a second: {runs}");

    handle.pause("heartbeat").await.unwrap();
    assert!(handle.pause("heartbeat").await.is_err(), "already paused");
    let paused = record("heartbeat").await;
    assert_eq!(paused.state, Lifecycle::Paused);
    assert_eq!(paused.next_due, None);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        record("heartbeat").await.runs,
        paused.runs,
        "no runs while paused"
    );

    handle.resume("heartbeat").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resumed = record("heartbeat").await;
    assert_eq!(resumed.state, Lifecycle::Active);
    assert!(resumed.runs > paused.runs);
    assert_eq!(resumed.missed, 0, "fires while paused are not missed");

    handle.run_now("cleanup").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cleanup = record("cleanup").await;
    assert_eq!((cleanup.runs, cleanup.successes), (1, 1));
    let history = store
        .call(|c| job_store::history(c, "cleanup", 10))
        .await
        .unwrap();
    assert_eq!(history[0].origin, "manual");
    assert!(handle.run_now("nope").await.is_err());

    shell.stop().await;
    assert!(
        handle.run_now("cleanup").await.is_err(),
        "a stopped scheduler says so"
    );
}

/// Readings sampled on a 1970 clock are re-stamped once NTP corrects and
/// synchronises it; later ones are taken as synced.
#[tokio::test]
async fn readings_taken_before_the_clock_was_trusted_are_corrected_when_it_is() {
    use tidegate::clock::{Clock, TestClock};

    let test_clock = TestClock::at(1970, 1, 1, 0, 0, 30, false);
    let sampling = "[jobs.sample]\nevery = \"1s\"\n[[bus]]\nname = \"sim\"\nkind = \"simulated\"\n[[sensor]]\nid = \"pond1.do\"\nbus = \"sim\"\nmodel = { base = 7.5 }\n";
    let shell = Shell::start(sampling, test_clock.clone()).await;
    let store = shell.store.clone();

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let synced_at = utc(2026, 11, 23, 1, 0, 0);
    test_clock.step(synced_at - test_clock.now().wall);
    test_clock.set_trusted(true);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    shell.stop().await;

    let rows: Vec<(i64, String)> = store
        .call(|c| {
            let mut stmt = c.prepare("SELECT ts, clock FROM readings ORDER BY seq")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap();
    let before: Vec<_> = rows.iter().filter(|r| r.1 == "corrected").collect();
    let after: Vec<_> = rows.iter().filter(|r| r.1 == "synced").collect();
    assert_eq!(before.len(), 2, "{rows:?}");
    assert!(!after.is_empty(), "{rows:?}");
    assert!(rows.iter().all(|r| r.1 != "unsynced"), "{rows:?}");
    let trust = synced_at.timestamp_millis();
    for (ts, _) in &before {
        assert!(
            (trust - 3_000..=trust).contains(ts),
            "corrected into the seconds before sync: {ts} vs {trust}"
        );
    }
    for (ts, _) in &after {
        assert!(*ts >= trust, "{ts}");
    }
    // The clock becoming trusted is one event, stamped on the trusted clock.
    let events = store
        .call(|c| tidegate::store::events::oldest(c, 100))
        .await
        .unwrap();
    let trusted: Vec<_> = events
        .iter()
        .filter(|(_, e)| e.kind == tidegate::event::Kind::ClockTrusted)
        .collect();
    assert_eq!(trusted.len(), 1, "{events:?}");
    assert!(trusted[0].1.ts >= synced_at, "{events:?}");
}

/// The real scheduler task on a fresh database, for tests that run in real time.
struct Shell {
    _dir: tempfile::TempDir,
    store: tidegate::store::StoreHandle,
    handle: tidegate::scheduler::SchedulerHandle,
    task: tokio::task::JoinHandle<()>,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Shell {
    /// Starts it with `rest` after a minimal `[agent]` table.
    async fn start(rest: &str, clock: tidegate::clock::TestClock) -> Shell {
        use std::sync::Arc;

        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[agent]\nid = \"t\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\n{rest}",
            dir.path().display()
        );
        let config = Arc::new(tidegate::config::parse_str(&text, "t.toml").unwrap());
        let store = tidegate::store::StoreHandle::spawn(tidegate::store::open(dir.path()).unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        // Events queued in the database as with a broker, so tests can count them.
        let mut ctx = tidegate::job::JobContext::new(config, Arc::new(clock), store.clone());
        ctx.events = tidegate::event::Events::queued(store.clone());
        let (handle, task) = tidegate::scheduler::spawn_with(ctx, shutdown.clone())
            .await
            .unwrap();
        Shell {
            _dir: dir,
            store,
            handle,
            task,
            shutdown,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}
