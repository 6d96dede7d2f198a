//! When the reconciler acts next: a pure state machine over tokio's clock. It holds the periodic
//! resync, the retry (with backoff) after a failed sync, the probe every `PROBE_EVERY` while Kong
//! is away or failing, the recheck when writes held for the plugin gate are due, the heartbeat
//! while Kong answers, and the gap that gathers a burst of events into one sync. The reconciler
//! asks it what is due and tells it what happened; its tests run on paused time.

use crate::backoff::Backoff;
use std::time::Duration;
use tokio::time::Instant;

/// The least time after an event-driven sync that wrote before the next: a burst of events is
/// applied together, and a crash-looping container cannot cause more than four writing syncs a
/// second.
pub const MIN_GAP: Duration = Duration::from_millis(250);

/// How often a Kong that is away or answers 5xx is probed (one cheap `GET /status`): the sync
/// after its return starts within this much of it, whatever the backoff says.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);

/// How often Kong is asked, between syncs, whether it is still the Kong we configured (one
/// `GET /status`): one that restarted is away for a moment (then it is probed, and synced as soon
/// as it answers), and one without a database (always empty after a restart) shows a
/// `configuration_hash` other than the one our last sync left.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// What is due at a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A sync: the periodic resync, a retry, held writes or a warmed-up container.
    Sync,
    /// See whether a Kong that was away answers well again.
    Probe,
    /// See whether Kong is still the one we configured.
    Heartbeat,
}

/// How a sync ended, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Converged,
    /// An event's sync from the last snapshot (DB mode: no request) converged with nothing
    /// written (a container held until it listens, say): it opens no gap, so the change that
    /// follows it closely (it listens) is applied at once.
    Unchanged,
    /// Kong did not answer, or answered 5xx: probe it rather than back off.
    KongDown,
    /// Anything else: retry with backoff.
    Failed,
}

#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    backoff: Backoff,
    next_periodic: Instant,
    retry_at: Option<Instant>,
    /// Set while Kong is away: probe it cheaply and often, sync as soon as it answers.
    probe_at: Option<Instant>,
    /// Writes held back until their service's plugins are in every Kong worker.
    recheck_at: Option<Instant>,
    next_beat: Instant,
    last_run: Option<Instant>,
}

impl Schedule {
    /// A schedule whose first sync is due now.
    pub fn new(interval: Duration) -> Schedule {
        let now = Instant::now();
        Schedule {
            interval,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
            next_periodic: now,
            retry_at: None,
            probe_at: None,
            recheck_at: None,
            next_beat: now + HEARTBEAT,
            last_run: None,
        }
    }

    /// The next deadline and what is due then; `warmed`: when a container has warmed up (its
    /// agent's targets change then), gathered as events are (no sooner than `MIN_GAP` after the
    /// last sync). No heartbeat while Kong is probed; a sync wins a tie.
    pub fn next(&self, warmed: Option<Instant>) -> (Instant, Due) {
        let beat = self.probe_at.is_none().then_some(self.next_beat);
        [
            (Some(self.next_periodic), Due::Sync),
            (self.retry_at, Due::Sync),
            (self.recheck_at, Due::Sync),
            (warmed.map(|w| self.gathered(w)), Due::Sync),
            (self.probe_at, Due::Probe),
            (beat, Due::Heartbeat),
        ]
        .into_iter()
        .filter_map(|(at, due)| Some((at?, due)))
        .min_by_key(|(at, _)| *at)
        .expect("the periodic resync is always scheduled")
    }

    /// `at`, or the end of the gap after the last sync when that is later.
    fn gathered(&self, at: Instant) -> Instant {
        self.last_run.map_or(at, |t| at.max(t + MIN_GAP))
    }

    /// An event arrived: until when to gather more before syncing — the end of the gap after the
    /// last sync, in a burst; None (at once) for an isolated change.
    pub fn gather_until(&self, now: Instant) -> Option<Instant> {
        self.last_run
            .map(|t| t + MIN_GAP)
            .filter(|until| *until > now)
    }

    /// A heartbeat ran: the next is due in `HEARTBEAT`; a Kong found away is probed from now on.
    pub fn beaten(&mut self, now: Instant, away: bool) {
        self.next_beat = now + HEARTBEAT;
        if away {
            self.probe_at = Some(now + PROBE_EVERY);
        }
    }

    /// A probe found Kong still away.
    pub fn still_away(&mut self, now: Instant) {
        self.probe_at = Some(now + PROBE_EVERY);
    }

    /// A sync ended: the periodic resync starts over, held writes are due at `recheck`, and a
    /// failure is probed (Kong down) or retried after the backoff's next delay, which is returned.
    pub fn synced(
        &mut self,
        now: Instant,
        ended: Ended,
        recheck: Option<Instant>,
    ) -> Option<Duration> {
        if ended != Ended::Unchanged {
            self.last_run = Some(now);
        }
        self.next_periodic = now + self.interval;
        self.recheck_at = recheck;
        self.probe_at = None;
        self.retry_at = None;
        match ended {
            Ended::Converged | Ended::Unchanged => {
                self.backoff.reset();
                None
            }
            Ended::KongDown => {
                self.probe_at = Some(now + PROBE_EVERY);
                None
            }
            Ended::Failed => {
                let d = self.backoff.next_delay();
                self.retry_at = Some(now + d);
                Some(d)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const INTERVAL: Duration = Duration::from_secs(300);

    /// Let time pass to the next deadline; what was due.
    async fn wait(s: &Schedule, warmed: Option<Instant>) -> (Duration, Due) {
        let t0 = Instant::now();
        let (at, due) = s.next(warmed);
        tokio::time::sleep_until(at).await;
        (t0.elapsed(), due)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_sync_is_due_at_once_then_heartbeats_every_second_until_the_periodic_resync()
    {
        let mut s = Schedule::new(INTERVAL);
        assert_eq!(wait(&s, None).await, (Duration::ZERO, Due::Sync));
        s.synced(Instant::now(), Ended::Converged, None);
        let mut beats = 0;
        loop {
            match wait(&s, None).await {
                (d, Due::Heartbeat) => {
                    assert_eq!(d, HEARTBEAT);
                    beats += 1;
                    s.beaten(Instant::now(), false);
                }
                (_, due) => {
                    assert_eq!(due, Due::Sync);
                    break;
                }
            }
        }
        assert_eq!(
            beats,
            INTERVAL.as_secs() - 1,
            "then the resync wins the tie"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_sync_is_retried_with_growing_backoff_and_success_resets_it() {
        let mut s = Schedule::new(INTERVAL);
        let mut delays = Vec::new();
        for _ in 0..6 {
            let d = s.synced(Instant::now(), Ended::Failed, None).unwrap();
            // heartbeats go on meanwhile: Kong answers, the sync failed for another reason
            loop {
                match wait(&s, None).await {
                    (_, Due::Heartbeat) => s.beaten(Instant::now(), false),
                    (_, due) => break assert_eq!(due, Due::Sync),
                }
            }
            delays.push(d);
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert!((400..=600).contains(&ms[0]), "{ms:?}");
        assert!(ms.windows(2).take(4).all(|w| w[1] > w[0]), "grows: {ms:?}");
        assert!(ms[5] <= 10_000, "capped: {ms:?}");
        assert_eq!(s.synced(Instant::now(), Ended::Converged, None), None);
        let d = s.synced(Instant::now(), Ended::Failed, None).unwrap();
        assert!(
            d <= Duration::from_millis(600),
            "reset after success: {d:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_kong_that_is_down_is_probed_every_200ms_without_heartbeats_or_backoff() {
        let mut s = Schedule::new(INTERVAL);
        assert_eq!(s.synced(Instant::now(), Ended::KongDown, None), None);
        for _ in 0..50 {
            assert_eq!(wait(&s, None).await, (PROBE_EVERY, Due::Probe));
            s.still_away(Instant::now());
        }
        // it answers: the probe syncs, and heartbeats come back
        s.synced(Instant::now(), Ended::Converged, None);
        let (_, due) = wait(&s, None).await;
        assert_eq!(due, Due::Heartbeat, "overdue while probing: at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_that_finds_kong_away_starts_the_probes() {
        let mut s = Schedule::new(INTERVAL);
        s.synced(Instant::now(), Ended::Converged, None);
        assert_eq!(wait(&s, None).await, (HEARTBEAT, Due::Heartbeat));
        s.beaten(Instant::now(), true);
        assert_eq!(wait(&s, None).await, (PROBE_EVERY, Due::Probe));
    }

    #[tokio::test(start_paused = true)]
    async fn held_writes_and_a_warming_container_wake_a_sync_when_due() {
        let mut s = Schedule::new(INTERVAL);
        let recheck = Instant::now() + Duration::from_millis(700);
        s.synced(Instant::now(), Ended::Converged, Some(recheck));
        assert_eq!(
            wait(&s, None).await,
            (Duration::from_millis(700), Due::Sync)
        );
        s.synced(Instant::now(), Ended::Converged, None);
        let warmed = Instant::now() + Duration::from_millis(300);
        assert_eq!(
            wait(&s, Some(warmed)).await,
            (Duration::from_millis(300), Due::Sync)
        );
        // warm-ups ending one after another are gathered as events are: one sync per gap
        s.synced(Instant::now(), Ended::Converged, None);
        s.beaten(Instant::now(), false);
        let warmed = Instant::now() + Duration::from_millis(10);
        assert_eq!(wait(&s, Some(warmed)).await, (MIN_GAP, Due::Sync));
    }

    #[tokio::test(start_paused = true)]
    async fn an_isolated_event_syncs_at_once_and_a_burst_waits_out_the_gap() {
        let mut s = Schedule::new(INTERVAL);
        assert_eq!(s.gather_until(Instant::now()), None, "no sync yet");
        s.synced(Instant::now(), Ended::Converged, None);
        advance(Duration::from_millis(100)).await;
        assert_eq!(
            s.gather_until(Instant::now()),
            Some(Instant::now() + Duration::from_millis(150)),
            "100 ms after a sync: gather until 250 ms after it"
        );
        advance(Duration::from_millis(150)).await;
        assert_eq!(s.gather_until(Instant::now()), None, "the gap has passed");
        s.synced(Instant::now(), Ended::Unchanged, None);
        assert_eq!(
            s.gather_until(Instant::now()),
            None,
            "a sync that wrote nothing opens no gap"
        );
    }
}
