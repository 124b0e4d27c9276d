//! `schedule:` — the batch jobs a running pipeline does at set times, as the original stack's
//! Airflow DAGs did: crontab lines (minute hour day-of-month month day-of-week, or `@daily`,
//! `@hourly`, …; a sixth field in front gives seconds), in UTC. The pipeline thread asks `Schedule::due` between batches; a due job
//! runs after a commit, inside the pipeline's process, while the source waits (see
//! `pipeline`). A job is not run twice for times it missed while busy or stopped: the next
//! time is computed from the moment the job ends.
use crate::config::ScheduledJob;
use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};

/// A parsed crontab time.
#[derive(Debug, Clone)]
pub struct Cron(croner::Cron);

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        parser.parse(text).map(Cron).map_err(|e| {
            format!("`{text}` is not a crontab time ([second] minute hour day month weekday): {e}")
        })
    }

    /// The first time after `time` (not at it) that matches.
    pub fn next_after(&self, time: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_next_occurrence(&time, false).ok()
    }
}

/// The configured jobs and when each is next due.
pub struct Schedule {
    jobs: Vec<(ScheduledJob, Cron, Option<DateTime<Utc>>)>,
}

impl Schedule {
    /// Validation has parsed every `cron` already; one that does not parse never runs.
    pub fn new(jobs: &[ScheduledJob], now: DateTime<Utc>) -> Self {
        Schedule {
            jobs: jobs
                .iter()
                .filter_map(|job| {
                    let cron = Cron::parse(&job.cron).ok()?;
                    let next = cron.next_after(now);
                    Some((job.clone(), cron, next))
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The first job due at `now`, if any.
    pub fn due(&self, now: DateTime<Utc>) -> Option<ScheduledJob> {
        self.jobs
            .iter()
            .find(|(_, _, next)| next.is_some_and(|n| n <= now))
            .map(|(job, _, _)| job.clone())
    }

    /// Job `name` ended at `now`: it is next due at its first time after that.
    pub fn ran(&mut self, name: &str, now: DateTime<Utc>) {
        for (job, cron, next) in &mut self.jobs {
            if job.name == name {
                *next = cron.next_after(now);
            }
        }
    }

    /// Each job's name and next time, for the status page.
    pub fn next_times(&self) -> Vec<(String, Option<DateTime<Utc>>)> {
        self.jobs
            .iter()
            .map(|(job, _, next)| (job.name.clone(), *next))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap()
    }

    #[test]
    fn crontab_times_are_parsed_and_followed_in_utc() {
        let nightly = Cron::parse("0 3 * * *").unwrap();
        assert_eq!(nightly.next_after(at(2, 59)), Some(at(3, 0)));
        assert_eq!(
            nightly.next_after(at(3, 0)),
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 3, 0, 0).unwrap())
        );
        let quarterly = Cron::parse("*/15 * * * *").unwrap();
        assert_eq!(quarterly.next_after(at(10, 1)), Some(at(10, 15)));
        assert_eq!(
            Cron::parse("@hourly").unwrap().next_after(at(10, 1)),
            Some(at(11, 0))
        );
        let seconds = Cron::parse("*/10 * * * * *").unwrap();
        assert_eq!(
            seconds.next_after(at(10, 1)),
            Some(at(10, 1) + chrono::Duration::seconds(10))
        );
    }

    #[test]
    fn what_is_not_a_crontab_line_is_refused() {
        for bad in [
            "",
            "every night",
            "0 3 * *",
            "0 0 3 * * * 2026",
            "61 * * * *",
        ] {
            let error = Cron::parse(bad).unwrap_err();
            assert!(error.contains("is not a crontab time"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_due_job_is_due_once_then_at_its_next_time() {
        let job = ScheduledJob {
            name: "compact".into(),
            cron: "*/15 * * * *".into(),
            job: crate::config::JobKind::Compact,
            layers: vec![],
            min_files: 4,
            target_file_mb: 128,
        };
        let mut schedule = Schedule::new(&[job], at(10, 1));
        assert!(schedule.due(at(10, 14)).is_none());
        assert_eq!(schedule.due(at(10, 15)).unwrap().name, "compact");
        // It ran long, past a later time: the next run is the one after it ended.
        schedule.ran("compact", at(10, 31));
        assert!(schedule.due(at(10, 44)).is_none());
        assert!(schedule.due(at(10, 45)).is_some());
    }
}
