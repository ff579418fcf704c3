//! `soilmon subscriptions …` (alert subscriptions of bureaus: webhooks, DingTalk and WeCom
//! robots, e-mail; immediate or daily digests) and `soilmon deliveries …` (what was sent, what failed, retry by hand).
//!
//! Secrets (the webhook HMAC key, a robot's URL with its token, DingTalk's signing secret,
//! the SMTP password)
//! go to `deliver.secrets_file`, never to the database; a generated webhook key is printed
//! once, at `add`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use soilmon::config::Settings;
use soilmon::deliver::filter::{Filters, LandClass, Scope};
use soilmon::deliver::secrets::{self, Secrets};
use soilmon::deliver::{
    self, email, engine, render, schedule, ChannelKind, Options, Outcome, Target,
};
use soilmon::store::deliveries;
use soilmon::store::subscriptions::{self, NewSubscription};

use super::{admin_connect, write_lines};

#[derive(Subcommand)]
pub enum SubscriptionsCommand {
    /// Create a subscription for a bureau; a webhook's signing secret is printed once.
    Add(Box<AddArgs>),
    /// List subscriptions: channel, target (tokens redacted), filters, options (digest,
    /// reminders, concurrency, e-mail addresses), queue.
    List,
    /// Send a test message through the subscription's channel and print the answer.
    Test {
        /// Subscription name.
        name: String,
    },
    /// Pause: alerts queue up and are delivered on resume.
    Pause {
        /// Subscription name.
        name: String,
    },
    /// Resume a paused subscription.
    Resume {
        /// Subscription name.
        name: String,
    },
    /// Remove a subscription (its pending deliveries are cancelled, its secrets deleted).
    Remove {
        /// Subscription name.
        name: String,
    },
}

#[derive(Args)]
pub struct AddArgs {
    /// Subscription name (letters, digits, `_.-`).
    name: String,
    /// Owning bureau (a `soilmon bureaus add` identity); its counties bound the filters.
    #[arg(long)]
    bureau: String,
    /// webhook, dingtalk, wecom or email.
    #[arg(long)]
    channel: String,
    /// Receiver URL (a robot's URL with its access token / key); for e-mail the SMTP
    /// server: smtp://[user@]host[:587] (STARTTLS), smtps://[user@]host[:465], or
    /// smtp://127.0.0.1:PORT?tls=none (loopback only).
    #[arg(long)]
    url: String,
    /// E-mail: recipient address, repeatable.
    #[arg(long = "to")]
    to: Vec<String>,
    /// E-mail: sender address.
    #[arg(long)]
    from: Option<String>,
    /// Send a daily digest at this local time (HH:MM, deliver.digest_utc_offset_hours)
    /// instead of every event at once.
    #[arg(long)]
    digest_at: Option<String>,
    /// Remind every day of incidents open longer than this many days.
    #[arg(long)]
    remind_days: Option<u32>,
    /// Deliveries in flight at once, each on its own incident (point × metal); order is
    /// kept per incident (default deliver.per_subscription).
    #[arg(long)]
    concurrency: Option<usize>,
    /// County code (within the bureau's scope), repeatable; default: all of the bureau's.
    #[arg(long = "county")]
    counties: Vec<String>,
    /// Metal (Cd, 镉, …), repeatable; default: all.
    #[arg(long = "metal")]
    metals: Vec<String>,
    /// screening or intervention, repeatable; default: both.
    #[arg(long = "level")]
    levels: Vec<String>,
    /// opened, escalated, deescalated, cleared, late_exceedance (default: these five),
    /// and on request overdue, overdue_cleared, incident_action; repeatable.
    #[arg(long = "state")]
    states: Vec<String>,
    /// station or lab, repeatable; default: both.
    #[arg(long = "source")]
    sources: Vec<String>,
    /// farmland or development; default: both.
    #[arg(long)]
    land_use: Option<String>,
    /// Extra request header `Name: value`, repeatable (no credentials: stored in the database).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Request timeout, ms (default deliver.timeout_ms; below deliver.lease_secs).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// CA certificate (PEM) the receiver's certificate must chain to.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// File holding the secret: the webhook HMAC key (default: generated and printed once),
    /// DingTalk's signing secret (SEC…) or the SMTP password.
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum DeliveriesCommand {
    /// The newest deliveries (state, attempts, last error).
    List {
        /// Only dead-lettered ones.
        #[arg(long)]
        failed: bool,
        /// Only this subscription's.
        #[arg(long)]
        subscription: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Put dead-lettered deliveries back in the queue (attempts start again).
    Retry {
        /// Delivery ids (from `deliveries list --failed`).
        ids: Vec<i64>,
        /// Every dead one of this subscription.
        #[arg(long)]
        subscription: Option<String>,
        /// Every dead one of every subscription.
        #[arg(long, conflicts_with_all = ["ids", "subscription"])]
        all: bool,
    },
}

/// Runs one `soilmon subscriptions` command.
pub async fn subscriptions(settings: &Settings, c: SubscriptionsCommand) -> Result<()> {
    let mut client = admin_connect(settings).await?;
    let path = &settings.deliver.secrets_file;
    match c {
        SubscriptionsCommand::Add(args) => add(settings, &client, *args).await,
        SubscriptionsCommand::List => {
            let lines: Vec<String> = subscriptions::list(&client)
                .await?
                .iter()
                .map(|s| {
                    format!(
                        "{}\tbureau={}\t{}\t{}\tfilters={}\toptions={}\t{}\tpending={}\tdead={}",
                        s.name,
                        s.bureau,
                        s.channel,
                        s.target,
                        s.filters,
                        s.options,
                        if s.paused { "paused" } else { "active" },
                        s.pending,
                        s.dead
                    )
                })
                .collect();
            write_lines(&mut std::io::stdout(), &lines)
        }
        SubscriptionsCommand::Test { name } => test(settings, &client, &name).await,
        SubscriptionsCommand::Pause { name } => {
            subscriptions::set_paused(&client, &name, true).await?;
            println!("subscription {name} paused (alerts queue up until resume)");
            Ok(())
        }
        SubscriptionsCommand::Resume { name } => {
            subscriptions::set_paused(&client, &name, false).await?;
            println!("subscription {name} resumed");
            Ok(())
        }
        SubscriptionsCommand::Remove { name } => {
            let cancelled = subscriptions::remove(&mut client, &name).await?;
            if !path.as_os_str().is_empty() {
                secrets::store(path, &name, None)?;
            }
            println!("subscription {name} removed ({cancelled} undelivered deliveries cancelled)");
            Ok(())
        }
    }
}

/// The filters of `add`, checked against the bureau's scope.
fn filters(args: &AddArgs, scope: &Scope) -> Result<Filters> {
    let land_class = match &args.land_use {
        None => None,
        Some(l) => Some(
            LandClass::parse(l)
                .with_context(|| format!("--land-use {l:?}: farmland or development"))?,
        ),
    };
    let f = Filters {
        counties: args.counties.clone(),
        metals: args.metals.clone(),
        levels: args.levels.clone(),
        states: args.states.clone(),
        sources: args.sources.clone(),
        land_class,
    };
    Ok(f.check(scope)?)
}

/// The channel options of `add`, checked.
fn options(settings: &Settings, args: &AddArgs) -> Result<Options> {
    let mut o = Options::default();
    for h in &args.headers {
        let Some((k, v)) = h.split_once(':') else {
            bail!("--header {h:?}: expected `Name: value`");
        };
        let (k, v) = (k.trim(), v.trim());
        deliver::check_header(k, v).map_err(anyhow::Error::msg)?;
        o.headers.insert(k.to_string(), v.to_string());
    }
    if let Some(t) = args.timeout_ms {
        if t == 0 || t >= settings.deliver.lease_secs.saturating_mul(1000) {
            bail!(
                "--timeout-ms {t}: must be positive and below deliver.lease_secs ({} s)",
                settings.deliver.lease_secs
            );
        }
        o.timeout_ms = Some(t);
    }
    if let Some(ca) = &args.ca_file {
        let ca =
            std::fs::canonicalize(ca).with_context(|| format!("--ca-file {}", ca.display()))?;
        soilmon::config::tls_client_config(&ca).map_err(anyhow::Error::msg)?;
        o.ca_file = Some(ca);
    }
    if let Some(at) = &args.digest_at {
        schedule::parse_local_time(at).map_err(anyhow::Error::msg)?;
        o.digest_at = Some(at.clone());
    }
    if args.remind_days == Some(0) {
        bail!("--remind-days: at least 1");
    }
    o.remind_days = args.remind_days;
    if args.concurrency == Some(0) {
        bail!("--concurrency: at least 1");
    }
    o.concurrency = args.concurrency;
    if args.channel == "email" {
        let from = args
            .from
            .as_deref()
            .context("an e-mail subscription needs --from")?;
        email::mailbox(from).map_err(anyhow::Error::msg)?;
        if args.to.is_empty() {
            bail!("an e-mail subscription needs at least one --to address");
        }
        for t in &args.to {
            email::mailbox(t).map_err(anyhow::Error::msg)?;
        }
        o.from = Some(from.to_string());
        o.to = args.to.clone();
    } else if args.from.is_some() || !args.to.is_empty() {
        bail!("--from and --to are for --channel email");
    }
    Ok(o)
}

async fn add(settings: &Settings, client: &deadpool_postgres::Client, args: AddArgs) -> Result<()> {
    let path = &settings.deliver.secrets_file;
    if path.as_os_str().is_empty() {
        bail!(secrets::SecretsError::NotConfigured);
    }
    let Some(channel) = ChannelKind::parse(&args.channel) else {
        bail!(
            "--channel {:?}: webhook, dingtalk, wecom or email",
            args.channel
        );
    };
    if channel == ChannelKind::Email {
        email::parse_server(&args.url).map_err(anyhow::Error::msg)?;
    } else {
        deliver::check_url(&args.url).map_err(anyhow::Error::msg)?;
    }
    let (counties, all) = subscriptions::bureau_scope(client, &args.bureau).await?;
    let scope = if all {
        Scope::All
    } else {
        Scope::Counties(counties)
    };
    let filters = filters(&args, &scope)?;
    let options = options(settings, &args)?;
    let given = match &args.secret_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("--secret-file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let generated = (channel == ChannelKind::Webhook && given.is_none()).then(secrets::new_secret);
    let (target, sec) = match channel {
        ChannelKind::Email => (
            args.url.clone(),
            Secrets {
                secret: given,
                url: None,
            },
        ),
        ChannelKind::Webhook => (
            args.url.clone(),
            Secrets {
                secret: given.or(generated.clone()),
                url: None,
            },
        ),
        _ => (
            deliver::redact(&args.url),
            Secrets {
                secret: given,
                url: Some(args.url.clone()),
            },
        ),
    };
    let filters_json = serde_json::to_value(&filters)?;
    let options_json = serde_json::to_value(&options)?;
    let new = NewSubscription {
        name: &args.name,
        bureau: &args.bureau,
        channel: channel.as_str(),
        target: &target,
        options: &options_json,
        filters: &filters_json,
    };
    if subscriptions::get(client, &args.name).await.is_ok() {
        bail!("subscription {:?} already exists", args.name);
    }
    secrets::store(path, &args.name, Some(&sec))?;
    if let Err(e) = subscriptions::add(client, &new).await {
        secrets::store(path, &args.name, None)?;
        return Err(e.into());
    }
    println!(
        "subscription {} created: {} {} for bureau {}; filters {}",
        args.name,
        channel.as_str(),
        target,
        args.bureau,
        filters_json
    );
    if let Some(secret) = generated {
        println!("its signing secret (shown once, kept in deliver.secrets_file):");
        println!("secret: {secret}");
    }
    Ok(())
}

/// A test event in the alert payload's shape, marked `"test": true`.
fn test_payload(name: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::now_v7(), "incident_id": null, "state": "test",
        "level": "screening", "point_id": "TEST", "county_code": "", "metal": "Cd",
        "value_mgkg": 0.0, "screening_mgkg": null, "intervention_mgkg": null,
        "standard": null, "land_use": "paddy", "sampled_at": chrono::Utc::now(),
        "source": "station", "station_id": "test", "test": true, "subscription": name,
    })
}

async fn test(settings: &Settings, client: &deadpool_postgres::Client, name: &str) -> Result<()> {
    let sub = subscriptions::get(client, name).await?;
    let all = secrets::load(&settings.deliver.secrets_file)?;
    let target = Target::build(
        &sub,
        all.get(name),
        Duration::from_millis(settings.deliver.timeout_ms),
    )?;
    let payload = test_payload(name);
    let ctx = engine::render_context(&settings.deliver);
    let event = render::Event {
        payload: &payload,
        point_name: Some("测试点位"),
    };
    match target.send(&[event], &ctx, 1).await {
        Outcome::Delivered { status, answer } => {
            let proto = if target.channel == ChannelKind::Email {
                "SMTP"
            } else {
                "HTTP"
            };
            println!("delivered: {proto} {status} {answer}");
            Ok(())
        }
        Outcome::Failed { error, .. } => bail!("test message not delivered: {error}"),
    }
}

/// Runs one `soilmon deliveries` command.
pub async fn deliveries(settings: &Settings, c: DeliveriesCommand) -> Result<()> {
    let client = admin_connect(settings).await?;
    match c {
        DeliveriesCommand::List {
            failed,
            subscription,
            limit,
        } => {
            let rows = deliveries::list(&client, failed, subscription.as_deref(), limit).await?;
            let lines: Vec<String> = rows
                .iter()
                .map(|d| {
                    format!(
                        "{}\t{}\t{}\t{}\tattempts={}\tcreated={}\t{}",
                        d.id,
                        d.subscription,
                        d.event_id,
                        d.state,
                        d.attempts,
                        d.created_at.to_rfc3339(),
                        match (&d.delivered_at, &d.last_error) {
                            (Some(t), _) => format!("delivered={}", t.to_rfc3339()),
                            (None, Some(e)) => format!("error={e}"),
                            (None, None) => format!("next={}", d.next_attempt_at.to_rfc3339()),
                        }
                    )
                })
                .collect();
            write_lines(&mut std::io::stdout(), &lines)
        }
        DeliveriesCommand::Retry {
            ids,
            subscription,
            all,
        } => {
            if ids.is_empty() && subscription.is_none() && !all {
                bail!("name delivery ids, --subscription NAME or --all");
            }
            let n = deliveries::retry(&client, &ids, subscription.as_deref()).await?;
            println!("{n} dead-lettered deliveries queued again");
            Ok(())
        }
    }
}
