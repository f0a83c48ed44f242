//! From merged YAML to [`ConsumerConfig`], collecting every problem on the way. Each section
//! reads itself (tenants, broker, SMTP, the consumer's extension, the destinations); this is the
//! order they are read in.

use std::path::PathBuf;

use serde_yaml_ng::Value;

use super::consumer::{ConsumerConfig, GenericUrl};
use super::tenant::parse_tenants;
use crate::settings::ConsumerSettings;
use crate::settings::Env;
use crate::settings::Problem;
use crate::settings::parse_forward;
use crate::settings::{Node, Problems};
use crate::settings::{email_wanted, parse_smtp};

/// Key path of Butler's Qlik Cloud section.
pub const QSC: &str = "Butler.qlikSenseCloud";

pub(crate) fn parse(
    doc: &Value,
    sources: Vec<PathBuf>,
    env: Env<'_>,
) -> Result<ConsumerConfig, Vec<Problem>> {
    let mut p = Problems::default();
    let root = Node::root("Butler", doc.as_mapping().and_then(|m| m.get("Butler")));
    if !root.expect_map(&mut p, true) {
        if let Some(problem) = p.0.last_mut() {
            problem.message.push_str(" (is this a Butler config file?)");
        }
        return Err(p.0);
    }

    let qsc = root.child("qlikSenseCloud");
    if qsc.expect_map(&mut p, true) && qsc.child("enable").bool_required(&mut p) == Some(false) {
        p.add(
            format!("{QSC}.enable"),
            "is false: the consumer only handles Qlik Cloud events; set it to true \
             (in the extension file, if Butler itself should keep it off)",
        );
    }

    let tenants = parse_tenants(&qsc, env, &mut p);
    let forward = root.at("mqttConfig.qlikSenseCloud.event.mqttForward");
    let (broker, topics) = parse_forward(&forward, env, &mut p);
    let generic_urls = parse_generic_urls(&root.child("genericUrls"), &mut p);
    let ext = qsc.child("consumer");
    let consumer = ConsumerSettings::read(&ext, env, &mut p);
    ext.child("destinations").expect_map(&mut p, false);
    shared_group_needs_shared_store(broker.as_ref(), &consumer, &mut p);
    let destinations = crate::sinks::parse_global(&root, &mut p);
    let smtp = if email_wanted(&qsc) {
        parse_smtp(&root.child("emailNotification"), env, &mut p)
    } else {
        None
    };

    if !p.0.is_empty() {
        return Err(p.0);
    }
    match (broker, topics) {
        (Some(broker), Some(topics)) if !tenants.is_empty() => Ok(ConsumerConfig {
            tenants,
            broker,
            topics,
            generic_urls,
            consumer,
            destinations,
            smtp,
            sources,
        }),
        // Every `None` above came with a problem; this arm is only reachable through a bug.
        _ => Err(vec![Problem {
            path: "Butler".to_owned(),
            message: "incomplete configuration".to_owned(),
        }]),
    }
}

/// A shared subscription splits the events between consumers, which must then agree through a
/// shared store: files in each one's state directory are not shared, so each member would
/// dedupe, rate-limit and redeliver on its own (docs/operations.md, High availability).
fn shared_group_needs_shared_store(
    broker: Option<&crate::settings::BrokerConfig>,
    consumer: &ConsumerSettings,
    p: &mut Problems,
) {
    let store = format!("{}.stateStore", crate::settings::CONSUMER);
    // A stateStore that did not parse has its own problem; the file store stood in for it.
    if broker.is_some_and(|b| b.shared_group.is_some())
        && consumer.ha.state_store == crate::settings::StateStoreConfig::File
        && !p.0.iter().any(|problem| problem.path == store)
    {
        p.add(
            format!(
                "{}.broker.sharedSubscriptionGroup",
                crate::settings::FORWARD
            ),
            format!(
                "is set, but {store} is the file store (absent or `file`), which is not shared \
                 between consumers: each member of the group would dedupe, rate-limit and \
                 redeliver on its own. Set {store} to a redis:// or rediss:// URL (the same for \
                 every member), or remove sharedSubscriptionGroup"
            ),
        );
    }
}

fn parse_generic_urls(node: &Node<'_>, p: &mut Problems) -> Vec<GenericUrl> {
    node.items(p)
        .into_iter()
        .filter_map(|item| {
            if !item.expect_map(p, true) {
                return None;
            }
            Some(GenericUrl {
                id: item.child("id").opt_string(p).unwrap_or_default(),
                link_text: item.child("linkText").opt_string(p).unwrap_or_default(),
                comment: item.child("comment").opt_string(p).unwrap_or_default(),
                url: item.child("url").link(p).unwrap_or_default(),
            })
        })
        .collect()
}
