//! Events of a tenant that is not configured explain themselves once an hour per tenant,
//! not once per event, and are still counted in `qscloud_consumer_events_total`.

mod support;

use support::*;

#[tokio::test]
async fn a_foreign_tenant_is_logged_once_and_every_event_counted() {
    const N: usize = 5;
    let broker = testkit::brokers().remove(0);
    let mut setup = write_config(&broker, &Destinations::default());
    let port = free_port();
    setup.edit(|config| {
        config.consumer("metrics.listen", format!("127.0.0.1:{port}"));
    });
    let consumer = spawn_binary(&setup).await;
    for i in 0..N {
        publish(
            &broker,
            &setup.topic,
            event(
                Sample::CloudEventsAppReload,
                &testkit::unique(&format!("foreign{i}")),
                OTHER_TENANT,
                "app-foreign",
            ),
        )
        .await;
    }
    let ignored = "qscloud_consumer_events_total{tenant=\"unknown\",outcome=\"ignored\"}";
    wait_for_metric(port, ignored, |v| v >= N as f64).await;
    let log = consumer.kill().await;
    let explained: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("from a tenant that is not configured"))
        .collect();
    assert_eq!(explained.len(), 1, "once, not once per event:\n{log}");
    assert!(explained[0].contains(OTHER_TENANT), "{}", explained[0]);
    assert!(
        explained[0].contains(&format!("configured={TENANT}")),
        "names what is configured: {}",
        explained[0]
    );
}
