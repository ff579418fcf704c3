//! The development-land plot registry (地块): plots, their points, their status changes
//! (who, when, why), and the land bureau's candidate list computed from the readings of
//! their points (through `readings_full`). Nothing here changes a status on its own: only
//! [`set_status`], called by a person's command, does.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, GenericClient, Transaction};
use serde::Serialize;

use super::StoreError;
use crate::domain::enterprise::{self, Candidate, Plot, PlotReading, PlotStatus};

/// Inserts or updates plots and replaces their point lists, in one transaction; refused whole
/// (nothing stored) when a file row would change a stored status (`status_via_import`: only
/// `soilmon plots status` does) or names a point of another stored plot
/// (`point_in_two_plots`). A new plot's initial status is recorded as a change by `by`.
pub async fn import(
    client: &mut Client,
    list: &[Plot],
    by: &str,
    reason: &str,
) -> Result<u64, StoreError> {
    let tx = client.transaction().await?;
    for p in list {
        let stored = tx
            .query_opt(
                "SELECT status FROM plots WHERE plot_id = $1 FOR UPDATE",
                &[&p.plot_id],
            )
            .await?;
        let stored_status: Option<Option<String>> = stored.map(|r| r.get(0));
        let wanted = p.status.map(PlotStatus::as_str);
        if let (Some(now), Some(w)) = (&stored_status, wanted) {
            if now.as_deref() != Some(w) {
                return Err(StoreError::Refused(format!(
                    "status_via_import: plot {} is {}, the file says {w}; \
                     change a status with `soilmon plots status`",
                    p.plot_id,
                    now.as_deref().unwrap_or("registered (no status)")
                )));
            }
        }
        check_points_free(&tx, p).await?;
        tx.execute(
            "INSERT INTO plots (plot_id, name, county_code, planned_use, status)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (plot_id) DO UPDATE SET name = EXCLUDED.name,
                 county_code = EXCLUDED.county_code, planned_use = EXCLUDED.planned_use,
                 updated_at = now()",
            &[
                &p.plot_id,
                &p.name,
                &p.county_code,
                &p.planned_use.as_str(),
                &wanted,
            ],
        )
        .await?;
        if let (None, Some(w)) = (&stored_status, wanted) {
            record_change(&tx, &p.plot_id, None, w, by, reason).await?;
        }
        tx.execute("DELETE FROM plot_points WHERE plot_id = $1", &[&p.plot_id])
            .await?;
        tx.execute(
            "INSERT INTO plot_points (plot_id, point_id) SELECT $1, p FROM unnest($2::text[]) AS p",
            &[&p.plot_id, &p.points],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(list.len() as u64)
}

async fn check_points_free(tx: &Transaction<'_>, p: &Plot) -> Result<(), StoreError> {
    let taken = tx
        .query_opt(
            "SELECT point_id, plot_id FROM plot_points
             WHERE point_id = ANY($1) AND plot_id <> $2 ORDER BY point_id LIMIT 1",
            &[&p.points, &p.plot_id],
        )
        .await?;
    match taken {
        Some(r) => Err(StoreError::Refused(format!(
            "point_in_two_plots: {} is already in plot {}",
            r.get::<_, String>(0),
            r.get::<_, String>(1)
        ))),
        None => Ok(()),
    }
}

async fn record_change(
    tx: &Transaction<'_>,
    plot_id: &str,
    from: Option<&str>,
    to: &str,
    by: &str,
    reason: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO plot_status_changes (plot_id, from_status, to_status, changed_by, reason)
         VALUES ($1, $2, $3, $4, $5)",
        &[&plot_id, &from, &to, &by, &reason],
    )
    .await?;
    Ok(())
}

/// Changes a plot's status by a person: one step up the ladder or back to suspected
/// ([`PlotStatus::may_become`]; a plot without a status may only become suspected), recorded
/// with who and why in the same transaction. Refused: `unknown_plot`,
/// `bad_status_transition`, `reason_required`.
pub async fn set_status(
    client: &mut Client,
    plot_id: &str,
    to: PlotStatus,
    by: &str,
    reason: &str,
) -> Result<Option<PlotStatus>, StoreError> {
    if by.trim().is_empty() || reason.trim().is_empty() {
        return Err(StoreError::Refused(
            "reason_required: a status change needs who (--by) and why (--reason)".into(),
        ));
    }
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT status FROM plots WHERE plot_id = $1 FOR UPDATE",
            &[&plot_id],
        )
        .await?
    else {
        return Err(StoreError::Refused(format!(
            "unknown_plot: {plot_id:?} is not registered"
        )));
    };
    let from = row
        .get::<_, Option<String>>(0)
        .as_deref()
        .and_then(PlotStatus::parse);
    let allowed = match from {
        None => to == PlotStatus::Suspected,
        Some(f) => f.may_become(to),
    };
    if !allowed {
        return Err(StoreError::Refused(format!(
            "bad_status_transition: plot {plot_id} is {}; it may not become {} \
             (one step: suspected -> investigated -> risk_control -> remediated, or back to suspected)",
            from.map_or("registered (no status)", PlotStatus::as_str),
            to.as_str()
        )));
    }
    tx.execute(
        "UPDATE plots SET status = $2, updated_at = now() WHERE plot_id = $1",
        &[&plot_id, &to.as_str()],
    )
    .await?;
    record_change(
        &tx,
        plot_id,
        from.map(PlotStatus::as_str),
        to.as_str(),
        by,
        reason,
    )
    .await?;
    tx.commit().await?;
    Ok(from)
}

/// A status change as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct StatusChange {
    /// Previous status (`None`: registered without one).
    pub from: Option<String>,
    /// New status.
    pub to: String,
    /// Who changed it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A plot as listed: the registry row, its points and its status history.
#[derive(Debug, Clone, Serialize)]
pub struct PlotListed {
    /// Plot id.
    pub plot_id: String,
    /// Name.
    pub name: String,
    /// County code.
    pub county_code: String,
    /// `development_first` or `development_second`.
    pub planned_use: String,
    /// Status (`None`: registered, not suspected).
    pub status: Option<String>,
    /// Its points.
    pub points: Vec<String>,
    /// Every status change, oldest first.
    pub history: Vec<StatusChange>,
}

/// The plots of `counties`, with points and history.
pub async fn list(
    client: &impl GenericClient,
    counties: &[String],
) -> Result<Vec<PlotListed>, StoreError> {
    let rows = client
        .query(
            "SELECT pl.plot_id, pl.name, pl.county_code, pl.planned_use, pl.status,
                    COALESCE(array_agg(pp.point_id ORDER BY pp.point_id)
                             FILTER (WHERE pp.point_id IS NOT NULL), '{}')
             FROM plots pl LEFT JOIN plot_points pp USING (plot_id)
             WHERE pl.county_code = ANY($1)
             GROUP BY 1, 2, 3, 4, 5 ORDER BY pl.county_code, pl.plot_id",
            &[&counties],
        )
        .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let changes = client
        .query(
            "SELECT plot_id, from_status, to_status, changed_by, reason, changed_at
             FROM plot_status_changes WHERE plot_id = ANY($1) ORDER BY changed_at, id",
            &[&ids],
        )
        .await?;
    let mut history: HashMap<String, Vec<StatusChange>> = HashMap::new();
    for c in changes {
        history.entry(c.get(0)).or_default().push(StatusChange {
            from: c.get(1),
            to: c.get(2),
            by: c.get(3),
            reason: c.get(4),
            at: c.get(5),
        });
    }
    Ok(rows
        .iter()
        .map(|r| {
            let plot_id: String = r.get(0);
            PlotListed {
                history: history.remove(&plot_id).unwrap_or_default(),
                plot_id,
                name: r.get(1),
                county_code: r.get(2),
                planned_use: r.get(3),
                status: r.get(4),
                points: r.get(5),
            }
        })
        .collect())
}

/// One entry of the land bureau's candidate list: a plot whose readings propose a status,
/// with the readings that decided it. A proposal only: the status is not changed.
#[derive(Debug, Clone, Serialize)]
pub struct PlotCandidate {
    /// Plot id.
    pub plot_id: String,
    /// Name.
    pub name: String,
    /// County code.
    pub county_code: String,
    /// Planned use.
    pub planned_use: String,
    /// Current status (`None`: registered, not suspected).
    pub status: Option<String>,
    /// What is proposed.
    pub candidate: Candidate,
    /// The worst level of the deciding readings.
    pub worst_level: &'static str,
    /// The exceeding readings among those that stand for each (point, metal) (lab first).
    pub evidence: Vec<PlotReading>,
}

/// The land bureau's candidate list for the plots of `counties`: per plot, the reading that
/// stands for each (point, metal) ([`enterprise::authoritative`]: newest campaign, lab
/// first), the worst of their levels, and [`enterprise::candidate`] given the plot's status.
pub async fn candidates(
    client: &impl GenericClient,
    counties: &[String],
) -> Result<Vec<PlotCandidate>, StoreError> {
    let plots = list(client, counties).await?;
    let points: Vec<&str> = plots
        .iter()
        .flat_map(|p| p.points.iter().map(String::as_str))
        .collect();
    let rows = client
        .query(
            "SELECT point_id, metal, sampled_at, source, source_id, msg_id, value_mgkg, level
             FROM readings_full WHERE point_id = ANY($1)",
            &[&points],
        )
        .await?;
    let mut by_point: HashMap<String, Vec<PlotReading>> = HashMap::new();
    for r in rows {
        let sampled_at: DateTime<Utc> = r.get(2);
        by_point.entry(r.get(0)).or_default().push(PlotReading {
            point_id: r.get(0),
            metal: r.get(1),
            sampled_at,
            campaign: super::crops::campaign_of(sampled_at),
            source: r.get(3),
            source_id: r.get(4),
            msg_id: r.get(5),
            value_mgkg: r.get(6),
            level: r.get(7),
        });
    }
    let mut out = Vec::new();
    for p in plots {
        let readings: Vec<PlotReading> = p
            .points
            .iter()
            .flat_map(|id| by_point.get(id).cloned().unwrap_or_default())
            .collect();
        let standing = enterprise::authoritative(&readings);
        let worst = enterprise::worst_level(standing.iter().copied());
        let status = p.status.as_deref().and_then(PlotStatus::parse);
        let Some(candidate) = enterprise::candidate(status, worst) else {
            continue;
        };
        let evidence = standing
            .into_iter()
            .filter(|r| r.level == "screening" || r.level == "intervention")
            .cloned()
            .collect();
        out.push(PlotCandidate {
            plot_id: p.plot_id,
            name: p.name,
            county_code: p.county_code,
            planned_use: p.planned_use,
            status: p.status,
            candidate,
            worst_level: worst,
            evidence,
        });
    }
    Ok(out)
}
