//! Evaluation: each run's aggregate of every metric its scenario template
//! defines, kept in `run_metrics` by the transaction that publishes each
//! `metric_recorded` sample, and the run's evaluation against the
//! template's success criteria, computed from those aggregates on read.
//!
//! Publishers of one run hold its row lock (`publish::bump_sequence`) from
//! the sequence bump to the commit, so reading an aggregate, adding the
//! samples and writing it back in that transaction never loses an update.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::Serialize;
use uuid::Uuid;

use super::event_type::METRIC_RECORDED;
use super::now;
use super::scenario_template::{Aggregation, MetricDefinition, Operator, ScenarioConfig};
use crate::entity::{event_instance, run_metric, scenario_run, scenario_template};
use crate::error::AppResult;

/// Two floats are `EQ` when they differ by at most this much relative to
/// the larger of 1 and the threshold's magnitude: sums and means of decimal
/// samples are rarely exact in binary.
pub const EQ_TOLERANCE: f64 = 1e-9;

/// A run's aggregate of one defined metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunMetric {
    /// The metric's name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// How its samples combine.
    pub aggregation: Aggregation,
    /// The aggregate; none before the first sample.
    pub value: Option<f64>,
    /// Samples so far.
    pub samples: i64,
    /// When the last sample came.
    pub updated_at: Option<DateTime<Utc>>,
}

/// Where a run stands against its success criteria.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EvaluationStatus {
    /// A criterion's metric has no value yet.
    Pending,
    /// Every criterion holds.
    Passed,
    /// Every criterion has a value and one does not hold.
    Failed,
}

/// One success criterion, judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CriterionOutcome {
    /// The metric.
    pub metric: String,
    /// The comparison.
    pub operator: Operator,
    /// The value compared with.
    pub threshold: f64,
    /// The metric's value; none before its first sample.
    pub value: Option<f64>,
    /// Whether it holds; none before the metric has a value.
    pub passed: Option<bool>,
}

/// A run's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// PENDING, PASSED or FAILED.
    pub status: EvaluationStatus,
    /// Each criterion with its outcome, in the template's order.
    pub criteria: Vec<CriterionOutcome>,
}

/// Whether `value` compared with `threshold` by `operator` holds.
pub fn holds(operator: Operator, value: f64, threshold: f64) -> bool {
    match operator {
        Operator::Gt => value > threshold,
        Operator::Gte => value >= threshold,
        Operator::Lt => value < threshold,
        Operator::Lte => value <= threshold,
        Operator::Eq => (value - threshold).abs() <= EQ_TOLERANCE * threshold.abs().max(1.0),
    }
}

/// The run's evaluation from its template's config and its metrics.
pub fn evaluate(config: &ScenarioConfig, metrics: &[RunMetric]) -> Evaluation {
    let criteria: Vec<CriterionOutcome> = config
        .success_criteria
        .iter()
        .map(|c| {
            let value = metrics
                .iter()
                .find(|m| m.name == c.metric)
                .and_then(|m| m.value);
            CriterionOutcome {
                metric: c.metric.clone(),
                operator: c.operator,
                threshold: c.threshold,
                value,
                passed: value.map(|v| holds(c.operator, v, c.threshold)),
            }
        })
        .collect();
    let status = if criteria.iter().any(|c| c.passed.is_none()) {
        EvaluationStatus::Pending
    } else if criteria.iter().all(|c| c.passed == Some(true)) {
        EvaluationStatus::Passed
    } else {
        EvaluationStatus::Failed
    };
    Evaluation { status, criteria }
}

/// Every defined metric of the template, with the run's aggregate where
/// there is one.
fn metrics_of(config: &ScenarioConfig, rows: &[run_metric::Model]) -> Vec<RunMetric> {
    config
        .metrics_definitions
        .iter()
        .map(|d| match rows.iter().find(|r| r.name == d.name) {
            Some(row) => RunMetric {
                name: d.name.clone(),
                unit: d.unit.clone(),
                aggregation: Aggregation::parse(&row.aggregation).unwrap_or(d.aggregation),
                value: row.value,
                samples: row.samples,
                updated_at: Some(row.updated_at),
            },
            None => RunMetric {
                name: d.name.clone(),
                unit: d.unit.clone(),
                aggregation: d.aggregation,
                value: None,
                samples: 0,
                updated_at: None,
            },
        })
        .collect()
}

/// The metrics and evaluation of each of `runs` (run id, template id): two
/// statements for any number of runs.
pub async fn of_runs<C: ConnectionTrait>(
    conn: &C,
    runs: &[(Uuid, Uuid)],
) -> AppResult<HashMap<Uuid, (Vec<RunMetric>, Evaluation)>> {
    let templates: HashMap<Uuid, ScenarioConfig> = scenario_template::Entity::find()
        .filter(scenario_template::Column::Id.is_in(runs.iter().map(|r| r.1)))
        .all(conn)
        .await?
        .iter()
        .map(|t| (t.id, super::scenario_template::config_of(t)))
        .collect();
    let mut rows: HashMap<Uuid, Vec<run_metric::Model>> = HashMap::new();
    for row in run_metric::Entity::find()
        .filter(run_metric::Column::RunId.is_in(runs.iter().map(|r| r.0)))
        .all(conn)
        .await?
    {
        rows.entry(row.run_id).or_default().push(row);
    }
    Ok(runs
        .iter()
        .map(|(run, template)| {
            let config = templates.get(template).cloned().unwrap_or_default();
            let metrics = metrics_of(&config, rows.get(run).map_or(&[], Vec::as_slice));
            let evaluation = evaluate(&config, &metrics);
            (*run, (metrics, evaluation))
        })
        .collect())
}

/// The metrics and evaluation of one run.
pub async fn of_run<C: ConnectionTrait>(
    conn: &C,
    run: &scenario_run::Model,
) -> AppResult<(Vec<RunMetric>, Evaluation)> {
    let mut found = of_runs(conn, &[(run.id, run.template_id)]).await?;
    Ok(found.remove(&run.id).unwrap_or_else(|| {
        let config = ScenarioConfig::default();
        (Vec::new(), evaluate(&config, &[]))
    }))
}

/// Adds the `metric_recorded` samples among `events` (new events of `run`,
/// in sequence order) to the run's aggregates, inside the publishing
/// transaction. Samples of metrics the template does not define stay plain
/// events. Returns whether any aggregate changed.
pub(crate) async fn aggregate_in<C: ConnectionTrait>(
    conn: &C,
    run: &scenario_run::Model,
    events: &[event_instance::Model],
) -> AppResult<bool> {
    let samples: Vec<(String, f64, i64)> = events
        .iter()
        .filter(|e| e.event_type == METRIC_RECORDED)
        .filter_map(|e| {
            let payload = e.payload.value();
            let metric = payload.get("metric")?.as_str()?.to_owned();
            let value = payload.get("value")?.as_f64()?;
            Some((metric, value, e.sequence))
        })
        .collect();
    if samples.is_empty() {
        return Ok(false);
    }
    let Some(template) = scenario_template::Entity::find_by_id(run.template_id)
        .one(conn)
        .await?
    else {
        return Ok(false);
    };
    let config = super::scenario_template::config_of(&template);
    let defined: HashMap<&str, &MetricDefinition> = config
        .metrics_definitions
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    if !samples.iter().any(|s| defined.contains_key(s.0.as_str())) {
        return Ok(false);
    }
    let mut rows: HashMap<String, run_metric::Model> = run_metric::Entity::find()
        .filter(run_metric::Column::RunId.eq(run.id))
        .filter(run_metric::Column::Name.is_in(samples.iter().map(|s| s.0.as_str())))
        .all(conn)
        .await?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let at = now();
    for (metric, value, sequence) in samples {
        let Some(definition) = defined.get(metric.as_str()) else {
            continue;
        };
        let row = rows
            .entry(metric.clone())
            .or_insert_with(|| run_metric::Model {
                run_id: run.id,
                name: metric,
                aggregation: definition.aggregation.as_str().to_owned(),
                unit: definition.unit.clone(),
                value: None,
                samples: 0,
                total: 0.0,
                last_sequence: 0,
                updated_at: at,
            });
        add(row, value, sequence, definition.aggregation);
        row.updated_at = at;
    }
    use run_metric::Column as M;
    for row in rows.into_values() {
        run_metric::Entity::insert(sea_orm::IntoActiveModel::into_active_model(row))
            .on_conflict(
                OnConflict::columns([M::RunId, M::Name])
                    .update_columns([
                        M::Value,
                        M::Samples,
                        M::Total,
                        M::LastSequence,
                        M::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    Ok(true)
}

/// Computes the aggregates of a new run (a fork, an import) from its
/// `metric_recorded` events, in sequence order.
pub(crate) async fn rebuild_in<C: ConnectionTrait>(
    conn: &C,
    run: &scenario_run::Model,
) -> AppResult<()> {
    use sea_orm::QueryOrder;
    let samples = event_instance::Entity::find()
        .filter(event_instance::Column::RunId.eq(run.id))
        .filter(event_instance::Column::EventType.eq(METRIC_RECORDED))
        .order_by_asc(event_instance::Column::Sequence)
        .all(conn)
        .await?;
    aggregate_in(conn, run, &samples).await?;
    Ok(())
}

/// Adds one sample to an aggregate. The row's own aggregation (fixed by the
/// run's first sample) rules, so a template edited mid-run does not mix two.
fn add(row: &mut run_metric::Model, value: f64, sequence: i64, defined: Aggregation) {
    let aggregation = Aggregation::parse(&row.aggregation).unwrap_or(defined);
    row.samples += 1;
    row.total += value;
    row.value = Some(match (aggregation, row.value) {
        (Aggregation::Sum, _) => row.total,
        (Aggregation::Mean, _) => row.total / row.samples as f64,
        (Aggregation::Count, _) => row.samples as f64,
        (Aggregation::Min, Some(v)) => v.min(value),
        (Aggregation::Max, Some(v)) => v.max(value),
        (Aggregation::Last, Some(v)) if sequence < row.last_sequence => v,
        (Aggregation::Min | Aggregation::Max | Aggregation::Last, _) => value,
    });
    row.last_sequence = row.last_sequence.max(sequence);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each operator at, above and below its threshold; EQ within its
    /// tolerance and not past it.
    #[test]
    fn operators_hold_at_above_and_below() {
        use Operator::*;
        let cases = [
            (Gt, [false, true, false]),
            (Gte, [true, true, false]),
            (Lt, [false, false, true]),
            (Lte, [true, false, true]),
            (Eq, [true, false, false]),
        ];
        for (operator, [at, above, below]) in cases {
            for threshold in [0.0_f64, 10.0, -2.5, 1e12] {
                let step = threshold.abs().max(1.0) * 1e-6;
                assert_eq!(holds(operator, threshold, threshold), at, "{operator:?} at");
                assert_eq!(
                    holds(operator, threshold + step, threshold),
                    above,
                    "{operator:?} above"
                );
                assert_eq!(
                    holds(operator, threshold - step, threshold),
                    below,
                    "{operator:?} below"
                );
            }
        }
        // 0.1 + 0.2 is not 0.3 in binary; EQ says it is.
        assert!(holds(Eq, 0.1 + 0.2, 0.3));
        assert!(!holds(Eq, 0.3 + 1e-6, 0.3));
    }

    #[test]
    fn last_keeps_the_highest_sequence() {
        let mut row = run_metric::Model {
            run_id: Uuid::nil(),
            name: "m".into(),
            aggregation: "LAST".into(),
            unit: String::new(),
            value: None,
            samples: 0,
            total: 0.0,
            last_sequence: 0,
            updated_at: now(),
        };
        add(&mut row, 1.0, 5, Aggregation::Last);
        add(&mut row, 2.0, 3, Aggregation::Last);
        assert_eq!(
            (row.value, row.samples, row.last_sequence),
            (Some(1.0), 2, 5)
        );
    }
}
