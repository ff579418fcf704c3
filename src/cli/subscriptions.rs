//! `soilmon subscriptions …` (alert subscriptions of bureaus: webhooks, DingTalk and WeCom
//! robots, e-mail; immediate or daily digests) and `soilmon deliveries …` (what was sent, what failed, retry by hand).
//!
//! Secrets (the webhook HMAC key, a robot's URL with its token, DingTalk's signing secret,
//! the SMTP password)
//! go to `deliver.secrets_file`, never to the database; a generated webhook key is printed
//! once, at `add`.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};

use soilmon::config::Settings;
use soilmon::deliver::manage::{self, Actor, NewRequest};

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

/// Runs one `soilmon subscriptions` command (every rule is in `deliver::manage`, shared
/// with the admin API and the console).
pub async fn subscriptions(settings: &Settings, c: SubscriptionsCommand) -> Result<()> {
    let mut client = admin_connect(settings).await?;
    let d = &settings.deliver;
    let me = Actor::ADMIN;
    match c {
        SubscriptionsCommand::Add(args) => add(settings, &client, *args).await,
        SubscriptionsCommand::List => {
            let now = chrono::Utc::now();
            let lines: Vec<String> = manage::list(&client, &me)
                .await?
                .iter()
                .map(|o| {
                    let s = &o.sub;
                    let age = o
                        .oldest_pending
                        .map_or(String::new(), |t| format!("\toldest={}s", (now - t).num_seconds()));
                    let error = o
                        .last_error
                        .as_ref()
                        .map_or(String::new(), |e| format!("\tlast_error={e}"));
                    format!(
                        "{}\tbureau={}\t{}\t{}\tfilters={}\toptions={}\t{}\tpending={}\tdead={}{age}{error}",
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
        SubscriptionsCommand::Test { name } => {
            let t = manage::test(d, &client, &me, &name).await?;
            if !t.delivered {
                bail!("test message not delivered: {}", t.answer);
            }
            println!("delivered: {}", t.answer);
            Ok(())
        }
        SubscriptionsCommand::Pause { name } => {
            manage::set_paused(&client, &me, &name, true).await?;
            println!("subscription {name} paused (alerts queue up until resume)");
            Ok(())
        }
        SubscriptionsCommand::Resume { name } => {
            manage::set_paused(&client, &me, &name, false).await?;
            println!("subscription {name} resumed");
            Ok(())
        }
        SubscriptionsCommand::Remove { name } => {
            let cancelled = manage::remove(d, &mut client, &me, &name).await?;
            println!("subscription {name} removed ({cancelled} undelivered deliveries cancelled)");
            Ok(())
        }
    }
}

async fn add(settings: &Settings, client: &deadpool_postgres::Client, args: AddArgs) -> Result<()> {
    let secret = match &args.secret_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("--secret-file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let req = NewRequest {
        name: args.name,
        bureau: args.bureau,
        channel: args.channel,
        url: args.url,
        to: args.to,
        from: args.from,
        digest_at: args.digest_at,
        remind_days: args.remind_days,
        concurrency: args.concurrency,
        counties: args.counties,
        metals: args.metals,
        levels: args.levels,
        states: args.states,
        sources: args.sources,
        land_use: args.land_use,
        headers: args.headers,
        timeout_ms: args.timeout_ms,
        ca_file: args.ca_file,
        secret,
    };
    let added = manage::add(&settings.deliver, client, &Actor::ADMIN, &req).await?;
    println!(
        "subscription {} created: {} {} for bureau {}; filters {}",
        added.name, added.channel, added.target, added.bureau, added.filters
    );
    if let Some(secret) = added.secret {
        println!("its signing secret (shown once, kept in deliver.secrets_file):");
        println!("secret: {secret}");
    }
    Ok(())
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
            let rows = manage::deliveries(
                &client,
                &Actor::ADMIN,
                failed,
                subscription.as_deref(),
                limit,
            )
            .await?;
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
            let n = manage::retry(&client, &Actor::ADMIN, &ids, subscription.as_deref()).await?;
            println!("{n} dead-lettered deliveries queued again");
            Ok(())
        }
    }
}
