//! The publishing side of `soilmon simulate`: one MQTT client, paced publishing of the
//! messages [`super::generate`] builds, PUBACK counting, the optional rejects subscription and
//! the orderly end of the run (see "Delivery" in the [`crate::simulate`] module
//! documentation).

use std::time::Duration;

use chrono::Utc;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use super::generate::Plan;
use super::{validate, MessageKind, SimReport, SimulateArgs, SimulateError};
use crate::config::MqttConfig;
use crate::domain::standard::Standards;
use crate::registry::parse_points_csv;

/// How long the run waits for the broker's CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the run waits for the SUBACK of the rejects subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the run waits, after the last publish, for the outstanding PUBACKs.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the run keeps listening for rejects after the last PUBACK (`--show-rejects`).
const REJECT_LINGER_MIN: Duration = Duration::from_secs(1);
/// Upper bound of that wait while fewer rejects than bad messages arrived.
const REJECT_LINGER_MAX: Duration = Duration::from_secs(5);
/// Interval of the progress line.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// What the event-loop task has seen so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    connected: bool,
    acked: u64,
    /// `Some(true)` once the rejects subscription was granted, `Some(false)` if refused.
    subscribed: Option<bool>,
    rejects: u64,
}

/// Aborts the event-loop task when the run ends early.
struct Poller(JoinHandle<Result<(), ConnectionError>>);

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls the MQTT event loop: counts PUBACKs and rejects, reports CONNACK and SUBACK. Ends
/// with `Ok` after the DISCONNECT went out, with the error on any connection failure.
async fn poll_loop(
    mut eventloop: EventLoop,
    progress: watch::Sender<Progress>,
) -> Result<(), ConnectionError> {
    loop {
        match eventloop.poll().await? {
            Event::Incoming(Incoming::ConnAck(_)) => progress.send_modify(|p| p.connected = true),
            Event::Incoming(Incoming::PubAck(_)) => progress.send_modify(|p| p.acked += 1),
            Event::Incoming(Incoming::SubAck(ack)) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| !matches!(c, SubscribeReasonCode::Failure));
                progress.send_modify(|p| p.subscribed = Some(granted));
            }
            Event::Incoming(Incoming::Publish(p)) => {
                info!(
                    topic = %p.topic,
                    "simulate: reject: {}",
                    String::from_utf8_lossy(&p.payload)
                );
                progress.send_modify(|p| p.rejects += 1);
            }
            Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
            _ => {}
        }
    }
}

/// The error to report once the event-loop task has ended.
fn poller_failure(
    outcome: Result<Result<(), ConnectionError>, JoinError>,
    acked: u64,
) -> SimulateError {
    match outcome {
        Ok(Err(source)) => SimulateError::Connection {
            acked,
            source: Box::new(source),
        },
        Ok(Ok(())) => SimulateError::EventLoopStopped {
            detail: "it disconnected before the run ended".into(),
        },
        Err(e) => SimulateError::EventLoopStopped {
            detail: e.to_string(),
        },
    }
}

/// Waits until `pred` holds for the progress, at most `limit`. `Ok(None)` on timeout; an
/// error if the event-loop task ended meanwhile.
async fn wait_until(
    rx: &mut watch::Receiver<Progress>,
    poller: &mut Poller,
    limit: Duration,
    pred: impl FnMut(&Progress) -> bool,
) -> Result<Option<Progress>, SimulateError> {
    let waited = tokio::time::timeout(limit, rx.wait_for(pred))
        .await
        .map(|r| r.map(|p| p.clone()));
    match waited {
        Ok(Ok(p)) => Ok(Some(p)),
        Ok(Err(_closed)) => {
            let acked = rx.borrow().acked;
            Err(poller_failure((&mut poller.0).await, acked))
        }
        Err(_elapsed) => Ok(None),
    }
}

/// Counters of the publishing loop.
#[derive(Debug, Default)]
struct Counts {
    published: u64,
    exceeding: u64,
    bad: u64,
}

/// The broker connection of a run: the client, what its event loop has seen, and the task
/// polling it.
struct Connection {
    client: AsyncClient,
    progress: watch::Receiver<Progress>,
    poller: Poller,
}

impl Connection {
    /// PUBACKs received so far.
    fn acked(&self) -> u64 {
        self.progress.borrow().acked
    }

    /// Waits until `pred` holds for the progress, at most `limit` (see [`wait_until`]).
    async fn wait(
        &mut self,
        limit: Duration,
        pred: impl FnMut(&Progress) -> bool,
    ) -> Result<Option<Progress>, SimulateError> {
        wait_until(&mut self.progress, &mut self.poller, limit, pred).await
    }

    /// The error to report after a client request failed: the event loop's own.
    async fn failure(&mut self) -> SimulateError {
        let acked = self.acked();
        poller_failure((&mut self.poller.0).await, acked)
    }
}

/// Runs the simulated station network against the broker in `mqtt` until `--count` messages
/// were published or `--duration` elapsed, waits for every PUBACK and returns what it did.
pub async fn run(
    args: &SimulateArgs,
    mqtt: &MqttConfig,
    standards: &Standards,
    counties: &[String],
) -> Result<SimReport, SimulateError> {
    let mut plan = load_plan(args, mqtt, counties).await?;
    let (period, run_for) = pacing(args)?;
    let mut conn = connect(args, mqtt, &plan).await?;
    if args.show_rejects {
        subscribe_rejects(&mut conn, mqtt, &plan).await?;
    }
    let started = Instant::now();
    let deadline = run_for.map(|d| started + d);
    let counts = publish_all(&mut conn, &mut plan, args, standards, period, deadline).await?;
    let published = counts.published;
    if conn
        .wait(ACK_TIMEOUT, |p| p.acked >= published)
        .await?
        .is_none()
    {
        return Err(SimulateError::AckTimeout {
            acked: conn.acked(),
            published,
            timeout: ACK_TIMEOUT,
        });
    }
    if args.show_rejects {
        linger_for_rejects(&mut conn, counts.bad).await?;
    }
    let elapsed = started.elapsed();
    let rejects_received = conn.progress.borrow().rejects;
    disconnect(conn).await;

    let report = SimReport {
        published,
        exceeding: counts.exceeding,
        bad: counts.bad,
        rejects_received,
        elapsed,
    };
    info!(
        published = report.published,
        exceeding = report.exceeding,
        bad = report.bad,
        rejects_received = report.rejects_received,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "simulate: done"
    );
    Ok(report)
}

/// Checks the arguments, reads the points file and deals the points to the stations.
async fn load_plan(
    args: &SimulateArgs,
    mqtt: &MqttConfig,
    counties: &[String],
) -> Result<Plan, SimulateError> {
    validate(args)?;
    let text = tokio::fs::read(&args.points)
        .await
        .map_err(|source| SimulateError::ReadPoints {
            path: args.points.clone(),
            source,
        })?;
    let points =
        parse_points_csv(text.as_slice(), counties).map_err(|source| SimulateError::Points {
            path: args.points.clone(),
            source,
        })?;
    let run_start_ms = Utc::now().timestamp_millis();
    Plan::new(args, points, &mqtt.topic_prefix, run_start_ms)
}

/// The interval between two publishes and, without `--count`, how long the run lasts.
fn pacing(args: &SimulateArgs) -> Result<(Duration, Option<Duration>), SimulateError> {
    let period = Duration::try_from_secs_f64(1.0 / args.rate)
        .map_err(|e| SimulateError::InvalidArgs {
            arg: "rate",
            detail: format!("{}: {e}", args.rate),
        })?
        .max(Duration::from_micros(1));
    let run_for = match args.count {
        Some(_) => None,
        None => Some(Duration::try_from_secs_f64(args.duration).map_err(|e| {
            SimulateError::InvalidArgs {
                arg: "duration",
                detail: format!("{}: {e}", args.duration),
            }
        })?),
    };
    Ok((period, run_for))
}

/// Connects the run's client (clean session, credentials and TLS from `mqtt`) and waits for
/// the broker's CONNACK.
async fn connect(
    args: &SimulateArgs,
    mqtt: &MqttConfig,
    plan: &Plan,
) -> Result<Connection, SimulateError> {
    let client_id = format!("soilmon-sim-{:08x}", rand::random::<u32>());
    let mut opts = MqttOptions::new(client_id.clone(), mqtt.host.clone(), mqtt.port);
    opts.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(mqtt.keep_alive_secs.min(65_535)))
        .set_max_packet_size(mqtt.max_packet_bytes, mqtt.max_packet_bytes);
    if !mqtt.username.is_empty() {
        opts.set_credentials(mqtt.username.clone(), mqtt.password.clone());
    }
    if let Some(tls) = &mqtt.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    // Room for about two seconds of publishes; `publish().await` applies back-pressure beyond.
    let capacity = ((args.rate * 2.0).ceil() as usize).clamp(256, 65_536);
    let (client, eventloop) = AsyncClient::new(opts, capacity);
    let (progress_tx, progress) = watch::channel(Progress::default());
    let poller = Poller(tokio::spawn(poll_loop(eventloop, progress_tx)));
    let mut conn = Connection {
        client,
        progress,
        poller,
    };
    if conn.wait(CONNECT_TIMEOUT, |p| p.connected).await?.is_none() {
        return Err(SimulateError::ConnectTimeout {
            host: mqtt.host.clone(),
            port: mqtt.port,
            timeout: CONNECT_TIMEOUT,
        });
    }
    info!(
        client_id,
        broker = %format!("{}:{}", mqtt.host, mqtt.port),
        stations = plan.stations.len(),
        rate = args.rate,
        "simulate: connected"
    );
    Ok(conn)
}

/// Subscribes to the rejects topics of the run's stations and waits for the SUBACK.
async fn subscribe_rejects(
    conn: &mut Connection,
    mqtt: &MqttConfig,
    plan: &Plan,
) -> Result<(), SimulateError> {
    let filters: Vec<SubscribeFilter> = plan
        .stations
        .iter()
        .map(|s| SubscribeFilter::new(mqtt.rejects_topic(&s.id), QoS::AtLeastOnce))
        .collect();
    if conn.client.subscribe_many(filters).await.is_err() {
        return Err(conn.failure().await);
    }
    let granted = conn
        .wait(SUBSCRIBE_TIMEOUT, |p| p.subscribed.is_some())
        .await?;
    match granted.and_then(|p| p.subscribed) {
        Some(true) => Ok(()),
        Some(false) => Err(SimulateError::Subscribe {
            detail: "the broker refused it".into(),
        }),
        None => Err(SimulateError::Subscribe {
            detail: format!("no SUBACK within {SUBSCRIBE_TIMEOUT:?}"),
        }),
    }
}

/// Publishes one planned message every `period` until `--count` messages were sent or the
/// `deadline` passed, logging progress every [`STATUS_EVERY`].
async fn publish_all(
    conn: &mut Connection,
    plan: &mut Plan,
    args: &SimulateArgs,
    standards: &Standards,
    period: Duration,
    deadline: Option<Instant>,
) -> Result<Counts, SimulateError> {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut status = tokio::time::interval_at(Instant::now() + STATUS_EVERY, STATUS_EVERY);
    let mut counts = Counts::default();
    loop {
        if args.count.is_some_and(|c| counts.published >= c) {
            return Ok(counts);
        }
        tokio::select! {
            biased;
            outcome = &mut conn.poller.0 => {
                return Err(poller_failure(outcome, conn.acked()));
            }
            _ = sleep_until_opt(deadline) => return Ok(counts),
            _ = status.tick() => {
                info!(
                    published = counts.published,
                    exceeding = counts.exceeding,
                    bad = counts.bad,
                    acked = conn.acked(),
                    "simulate: progress"
                );
                continue;
            }
            _ = ticks.tick() => {}
        }
        let planned = plan.next(Utc::now(), standards);
        let sent = tokio::select! {
            biased;
            outcome = &mut conn.poller.0 => {
                return Err(poller_failure(outcome, conn.acked()));
            }
            r = conn.client.publish(planned.topic, QoS::AtLeastOnce, false, planned.payload) => r,
        };
        if sent.is_err() {
            return Err(conn.failure().await);
        }
        counts.published += 1;
        match planned.kind {
            MessageKind::Normal => {}
            MessageKind::Exceeding => counts.exceeding += 1,
            MessageKind::Bad(_) => counts.bad += 1,
        }
    }
}

/// Keeps listening for rejects ([`REJECT_LINGER_MIN`], up to [`REJECT_LINGER_MAX`] while
/// fewer than `bad` arrived); warns when some bad message was not answered.
async fn linger_for_rejects(conn: &mut Connection, bad: u64) -> Result<(), SimulateError> {
    tokio::time::sleep(REJECT_LINGER_MIN).await;
    let answered = conn
        .wait(REJECT_LINGER_MAX.saturating_sub(REJECT_LINGER_MIN), |p| {
            p.rejects >= bad
        })
        .await?;
    if answered.is_none() {
        warn!(
            bad,
            rejects = conn.progress.borrow().rejects,
            "simulate: not every bad message has been answered yet (is soilmon running?)"
        );
    }
    Ok(())
}

/// Orderly DISCONNECT, bounded; every publish is acknowledged already.
async fn disconnect(mut conn: Connection) {
    if conn.client.disconnect().await.is_ok() {
        match tokio::time::timeout(Duration::from_secs(5), &mut conn.poller.0).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "simulate: error while disconnecting"),
            Ok(Err(e)) => warn!(error = %e, "simulate: event loop task failed"),
            Err(_) => warn!("simulate: DISCONNECT not sent within 5 s"),
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
