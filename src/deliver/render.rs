//! Message text, pure: the Chinese markdown that robots (DingTalk, WeCom) show and e-mail
//! carries as plain text for one event, the summary that folds several, and the daily
//! digest and reminder.
//!
//! Every line a bureau needs to act: point name and id, county, metal, value against the
//! threshold it exceeded, level, state, source and sampling time (Beijing time), and a link
//! to the console's incident page when `deliver.console_base_url` is set.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::Value;

use crate::store::deliveries::Claimed;
use crate::store::digests::OpenIncident;

/// What rendering needs besides the event.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// County code → Chinese name (`deliver.county_names`).
    pub county_names: BTreeMap<String, String>,
    /// Base URL of the console (`deliver.console_base_url`); empty: no link.
    pub console_base_url: String,
}

/// One event to render: the alert payload and the point's registered name.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The alert payload (wire contract).
    pub payload: &'a Value,
    /// The point's name from the registry, if known.
    pub point_name: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// The event of a claimed delivery: its payload and its point's name (the one
    /// constructor the batch sender and the digest share).
    pub fn of(c: &'a Claimed) -> Event<'a> {
        Event {
            payload: &c.event.payload,
            point_name: c.event.point_name.as_deref(),
        }
    }
}

/// What a daily digest (or a reminder) reports.
#[derive(Debug, Clone)]
pub struct Digest<'a> {
    /// The period: from the previous digest (or the subscription's creation)…
    pub from: DateTime<Utc>,
    /// …to this digest's slot.
    pub to: DateTime<Utc>,
    /// The state changes of the period, oldest first; `None` for a reminder alone.
    pub changes: Option<&'a [Event<'a>]>,
    /// The incidents still open (for a reminder: those open longer than `remind_days`).
    pub open: &'a [OpenIncident],
    /// Incidents open longer than this many days are marked (and make a reminder).
    pub remind_days: Option<u32>,
}

/// A rendered message: a short title (DingTalk shows it in the chat list) and a markdown body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Title, one line.
    pub title: String,
    /// Markdown body.
    pub text: String,
}

/// The Chinese name of a metal symbol.
pub fn metal_chinese(symbol: &str) -> &str {
    match symbol {
        "Pb" => "铅",
        "Hg" => "汞",
        "Cd" => "镉",
        "Cr" => "铬",
        "Cr6" => "六价铬",
        "As" => "砷",
        "Cu" => "铜",
        "Zn" => "锌",
        "Ni" => "镍",
        other => other,
    }
}

/// The Chinese name of an event state.
pub fn state_chinese(state: &str) -> &str {
    match state {
        "opened" => "新发超标",
        "escalated" => "升级",
        "deescalated" => "降级",
        "cleared" => "解除",
        "late_exceedance" => "迟到结果超标",
        "test" => "测试消息",
        "overdue" => "监测逾期",
        "overdue_cleared" => "逾期解除",
        other => other,
    }
}

/// The Chinese name of a level.
pub fn level_chinese(level: &str) -> &str {
    match level {
        "screening" => "超风险筛选值",
        "intervention" => "超风险管制值",
        other => other,
    }
}

fn text<'v>(p: &'v Value, key: &str) -> &'v str {
    p.get(key).and_then(Value::as_str).unwrap_or("")
}

fn number(p: &Value, key: &str) -> Option<f64> {
    p.get(key).and_then(Value::as_f64)
}

/// An RFC 3339 time shown in Beijing time, `YYYY-MM-DD HH:MM`.
fn beijing(rfc3339: &str) -> String {
    let (Ok(t), Some(cst)) = (
        DateTime::parse_from_rfc3339(rfc3339),
        FixedOffset::east_opt(8 * 3600),
    ) else {
        return rfc3339.to_string();
    };
    t.with_timezone(&cst).format("%Y-%m-%d %H:%M").to_string()
}

impl Context {
    fn county(&self, code: &str) -> String {
        match self.county_names.get(code) {
            Some(name) => format!("{name}（{code}）"),
            None => code.to_string(),
        }
    }

    /// The console link of an event's incident, if a console is configured and the event
    /// has an incident.
    /// A one-event message: its lines, then the link to the incident page when there is one.
    fn with_link(&self, title: String, mut lines: Vec<String>, p: &Value) -> Message {
        if let Some(link) = self.link(p) {
            lines.push(format!("- [查看事件详情]({link})"));
        }
        Message {
            title,
            text: lines.join("\n"),
        }
    }

    fn link(&self, p: &Value) -> Option<String> {
        let base = self.console_base_url.trim_end_matches('/');
        let id = text(p, "incident_id");
        (!base.is_empty() && !id.is_empty()).then(|| format!("{base}/incidents/{id}"))
    }

    /// `point name（id）`.
    fn point(&self, e: &Event<'_>) -> String {
        let id = text(e.payload, "point_id");
        match e.point_name {
            Some(name) if !name.is_empty() => format!("{name}（{id}）"),
            _ => id.to_string(),
        }
    }

    /// The title of one event: `【土壤告警】阳春市 镉 新发超标（超风险筛选值）`.
    fn title(&self, p: &Value) -> String {
        let county = self
            .county_names
            .get(text(p, "county_code"))
            .map(String::as_str)
            .unwrap_or(text(p, "county_code"));
        format!(
            "【土壤告警】{county} {} {}（{}）",
            metal_chinese(text(p, "metal")),
            state_chinese(text(p, "state")),
            level_chinese(text(p, "level"))
        )
    }

    /// The message for one event: an exceedance alert, an overdue point or a workflow
    /// action.
    pub fn alert(&self, e: &Event<'_>) -> Message {
        match super::filter::event_state(e.payload) {
            "overdue" | "overdue_cleared" => self.overdue(e),
            "incident_action" => self.action(e),
            _ => self.exceedance(e),
        }
    }

    /// An overdue point (or its clearing), from network management.
    fn overdue(&self, e: &Event<'_>) -> Message {
        let p = e.payload;
        let county = self.county(text(p, "county_code"));
        let state = state_chinese(text(p, "state"));
        let title = format!("【土壤监测】{county} {} {state}", self.point(e));
        let metals: Vec<&str> = p
            .get("metals")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|x| x.get("metal").and_then(Value::as_str).or(x.as_str()))
                    .map(metal_chinese)
                    .collect()
            })
            .unwrap_or_default();
        let mut lines = vec![
            format!("### {title}"),
            format!("- 点位：{}", self.point(e)),
            format!("- 区县：{county}"),
            format!("- 状态：{state}"),
            format!(
                "- 逾期起始：{}（北京时间）",
                beijing(text(p, "overdue_since"))
            ),
        ];
        if !metals.is_empty() {
            lines.push(format!("- 逾期指标：{}", metals.join("、")));
        }
        lines.push(format!("- 事件编号：{}", text(p, "event_id")));
        Message {
            title,
            text: lines.join("\n"),
        }
    }

    /// A workflow action taken on an incident in the console.
    fn action(&self, e: &Event<'_>) -> Message {
        let p = e.payload;
        let action = match text(p, "action") {
            "acknowledge" => "已确认",
            "assign" => "已指派",
            "note" => "备注",
            "investigate" => "调查中",
            "close" => "已关闭",
            other => other,
        };
        let title = format!(
            "【土壤事件处置】{} {} {action}",
            self.county(text(p, "county_code")),
            metal_chinese(text(p, "metal"))
        );
        let lines = vec![
            format!("### {title}"),
            format!("- 点位：{}", self.point(e)),
            format!("- 指标：{}", metal_chinese(text(p, "metal"))),
            format!("- 处置：{action}"),
            format!("- 操作人：{}", text(p, "actor")),
            format!("- 说明：{}", text(p, "detail")),
            format!("- 时间：{}（北京时间）", beijing(text(p, "at"))),
            format!("- 事件编号：{}", text(p, "event_id")),
        ];
        self.with_link(title, lines, p)
    }

    /// An exceedance alert.
    fn exceedance(&self, e: &Event<'_>) -> Message {
        let p = e.payload;
        let title = self.title(p);
        let metal = text(p, "metal");
        let value = number(p, "value_mgkg").map_or("—".to_string(), |v| format!("{v} mg/kg"));
        let threshold = match (number(p, "screening_mgkg"), number(p, "intervention_mgkg")) {
            (Some(s), Some(i)) => format!("筛选值 {s}，管制值 {i} mg/kg"),
            (Some(s), None) => format!("筛选值 {s} mg/kg（无管制值）"),
            _ => "无适用标准".to_string(),
        };
        let source = match text(p, "source") {
            "lab" => format!("实验室批次 {}", text(p, "source_id")),
            _ => format!("监测站 {}", text(p, "station_id")),
        };
        let lines = vec![
            format!("### {title}"),
            format!("- 点位：{}", self.point(e)),
            format!("- 区县：{}", self.county(text(p, "county_code"))),
            format!("- 指标：{}（{metal}）", metal_chinese(metal)),
            format!("- 测定值：{value}（{threshold}）"),
            format!("- 级别：{}", level_chinese(text(p, "level"))),
            format!("- 状态：{}", state_chinese(text(p, "state"))),
            format!("- 标准：{}", text(p, "standard")),
            format!("- 来源：{source}"),
            format!("- 采样时间：{}（北京时间）", beijing(text(p, "sampled_at"))),
            format!("- 事件编号：{}", text(p, "event_id")),
        ];
        self.with_link(title, lines, p)
    }

    /// The daily digest, or a reminder alone when `d.changes` is `None`.
    pub fn digest(&self, d: &Digest<'_>, max_lines: usize) -> Message {
        let day = beijing(&d.to.to_rfc3339());
        let day = day.split(' ').next().unwrap_or_default();
        let old = |i: &OpenIncident| {
            d.remind_days
                .is_some_and(|n| d.to - i.opened_sampled_at > chrono::Duration::days(n.into()))
        };
        let title = match d.changes {
            Some(c) => format!(
                "【土壤告警日报】{day}：{} 条变化，{} 项未解除",
                c.len(),
                d.open.len()
            ),
            None => format!(
                "【土壤告警提醒】{} 项超标事件超过 {} 天未解除",
                d.open.len(),
                d.remind_days.unwrap_or_default()
            ),
        };
        let mut lines = vec![
            format!("### {title}"),
            format!(
                "统计时段：{} 至 {}（北京时间）",
                beijing(&d.from.to_rfc3339()),
                beijing(&d.to.to_rfc3339())
            ),
        ];
        if let Some(changes) = d.changes {
            lines.push(format!("#### 状态变化（{} 条）", changes.len()));
            if changes.is_empty() {
                lines.push("- 无".to_string());
            }
            for e in changes.iter().take(max_lines) {
                lines.push(format!("- {}", self.one_line(e)));
            }
            if changes.len() > max_lines {
                lines.push(format!("- ……另有 {} 条", changes.len() - max_lines));
            }
        }
        lines.push(format!("#### 仍未解除的超标事件（{} 项）", d.open.len()));
        if d.open.is_empty() {
            lines.push("- 无".to_string());
        }
        for i in d.open.iter().take(max_lines) {
            let point = match &i.point_name {
                Some(n) => format!("{n}（{}）", i.point_id),
                None => i.point_id.clone(),
            };
            let days = (d.to - i.opened_sampled_at).num_days();
            let mut line = format!(
                "- {} {point} {}，{}，自 {} 起，已 {days} 天",
                self.county(&i.county_code),
                metal_chinese(&i.metal),
                level_chinese(&i.level),
                beijing(&i.opened_sampled_at.to_rfc3339()),
            );
            if old(i) {
                line.push_str(&format!(
                    "【提醒：超过 {} 天未解除】",
                    d.remind_days.unwrap_or_default()
                ));
            }
            let base = self.console_base_url.trim_end_matches('/');
            if !base.is_empty() {
                line.push_str(&format!(" [详情]({base}/incidents/{})", i.incident_id));
            }
            lines.push(line);
        }
        if d.open.len() > max_lines {
            lines.push(format!("- ……另有 {} 项", d.open.len() - max_lines));
        }
        Message {
            title,
            text: lines.join("\n"),
        }
    }

    /// One event on one line (summaries and digests).
    fn one_line(&self, e: &Event<'_>) -> String {
        let p = e.payload;
        match super::filter::event_state(p) {
            "overdue" | "overdue_cleared" | "incident_action" => self.alert(e).title,
            _ => {
                let value = number(p, "value_mgkg").map_or("—".to_string(), |v| v.to_string());
                format!(
                    "{} {} {} {} mg/kg，{}，{}（采样 {}）",
                    self.county(text(p, "county_code")),
                    self.point(e),
                    metal_chinese(text(p, "metal")),
                    value,
                    level_chinese(text(p, "level")),
                    state_chinese(text(p, "state")),
                    beijing(text(p, "sampled_at")),
                )
            }
        }
    }

    /// One summary message for several events (folded past a robot's rate limit), at most
    /// `max_lines` listed and the rest counted.
    pub fn summary(&self, events: &[Event<'_>], max_lines: usize) -> Message {
        let title = format!("【土壤告警汇总】{} 条告警", events.len());
        let mut lines = vec![
            format!("### {title}"),
            "发送频率已达机器人上限，以下告警合并为一条：".to_string(),
        ];
        for e in events.iter().take(max_lines) {
            let p = e.payload;
            let value = number(p, "value_mgkg").map_or("—".to_string(), |v| v.to_string());
            let mut line = format!(
                "- {} {} {} {} mg/kg，{}，{}",
                self.county(text(p, "county_code")),
                self.point(e),
                metal_chinese(text(p, "metal")),
                value,
                level_chinese(text(p, "level")),
                state_chinese(text(p, "state")),
            );
            if let Some(link) = self.link(p) {
                line.push_str(&format!(" [详情]({link})"));
            }
            lines.push(line);
        }
        if events.len() > max_lines {
            lines.push(format!("- ……另有 {} 条", events.len() - max_lines));
        }
        Message {
            title,
            text: lines.join("\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Context {
        Context {
            county_names: [("441781".to_string(), "阳春市".to_string())].into(),
            console_base_url: "https://console.example/".into(),
        }
    }

    fn payload() -> Value {
        json!({"event_id": "e1", "incident_id": "i1", "state": "opened", "level": "screening",
               "point_id": "441781-T-0001", "county_code": "441781", "metal": "Cd",
               "value_mgkg": 0.45, "screening_mgkg": 0.4, "intervention_mgkg": 2.0,
               "standard": "GB 15618-2018", "sampled_at": "2026-11-28T01:30:00Z",
               "source": "station", "station_id": "st01"})
    }

    #[test]
    fn one_alert_in_chinese_with_every_field_and_the_link() {
        let p = payload();
        let m = ctx().alert(&Event {
            payload: &p,
            point_name: Some("阳春水田"),
        });
        assert_eq!(m.title, "【土壤告警】阳春市 镉 新发超标（超风险筛选值）");
        for want in [
            "- 点位：阳春水田（441781-T-0001）",
            "- 区县：阳春市（441781）",
            "- 指标：镉（Cd）",
            "- 测定值：0.45 mg/kg（筛选值 0.4，管制值 2 mg/kg）",
            "- 状态：新发超标",
            "- 来源：监测站 st01",
            "- 采样时间：2026-11-28 09:30（北京时间）",
            "- [查看事件详情](https://console.example/incidents/i1)",
        ] {
            assert!(m.text.contains(want), "{want} missing in\n{}", m.text);
        }
    }

    #[test]
    fn no_link_without_a_console_or_an_incident() {
        let mut p = payload();
        let m = Context::default().alert(&Event {
            payload: &p,
            point_name: None,
        });
        assert!(!m.text.contains("查看事件详情"));
        assert!(m.text.contains("- 点位：441781-T-0001\n"));
        p["incident_id"] = Value::Null;
        assert!(!ctx()
            .alert(&Event {
                payload: &p,
                point_name: None
            })
            .text
            .contains("查看事件详情"));
    }

    #[test]
    fn summary_lists_and_counts_the_rest() {
        let p = payload();
        let events: Vec<Event<'_>> = (0..5)
            .map(|_| Event {
                payload: &p,
                point_name: None,
            })
            .collect();
        let m = ctx().summary(&events, 3);
        assert_eq!(m.title, "【土壤告警汇总】5 条告警");
        assert_eq!(m.text.matches("\n- 阳春市").count(), 3);
        assert!(m.text.ends_with("- ……另有 2 条"));
    }
}
