//! The command line: help for every command, exit codes scripts rely on, secrets never printed.

mod support;

use support::*;

async fn consumer(args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(binary())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("consumer runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn every_command_has_help_with_the_exit_codes() {
    let (code, top, _) = consumer(&["--help"]).await;
    assert_eq!(code, 0);
    for command in ["run", "check-config", "replay"] {
        assert!(top.contains(command), "{top}");
        let (code, help, _) = consumer(&[command, "--help"]).await;
        assert_eq!(code, 0, "{command}");
        assert!(help.contains("--config"), "{command}: {help}");
        assert!(
            help.contains("78") && help.contains("75"),
            "{command}: {help}"
        );
    }
    let (_, replay, _) = consumer(&["replay", "--help"]).await;
    assert!(
        replay.contains("--sink") && replay.contains("--list"),
        "{replay}"
    );
    // What a monitoring script relies on, said where it looks.
    assert!(
        replay.contains("Exit 75 when at least one alert is")
            && replay.contains("replay --list: at\n      least one alert is parked"),
        "{replay}"
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let (code, _, stderr) = consumer(&["run"]).await;
    assert_eq!(code, 2, "{stderr}");
    let (code, _, _) = consumer(&["frobnicate"]).await;
    assert_eq!(code, 2);
}

#[tokio::test]
async fn an_invalid_configuration_exits_78_naming_the_key_for_every_command() {
    let broker = testkit::embedded();
    let setup = write_config(&broker, &Destinations::default());
    let text = std::fs::read_to_string(&setup.butler).expect("config");
    let broken = text.replace("tenantUrl: http://127.0.0.1:9", "tenantUrl: not a url");
    std::fs::write(&setup.butler, broken).expect("write");
    for command in [vec!["check-config"], vec!["run"], vec!["replay"]] {
        let (code, stdout, stderr) = run_command(&setup, &command).await;
        assert_eq!(code, 78, "{command:?}: {stdout}{stderr}");
        assert!(
            format!("{stdout}{stderr}")
                .contains("Butler.qlikSenseCloud.event.mqtt.tenant.tenantUrl"),
            "{command:?}: {stdout}{stderr}"
        );
    }
}

#[tokio::test]
async fn check_config_summarizes_with_secrets_masked() {
    let broker = testkit::embedded();
    let setup = write_config(
        &broker,
        &Destinations {
            slack: Some("http://127.0.0.1:9/services/T0/B0/slack-secret-path".into()),
            webhook: Some("http://127.0.0.1:9/hook?token=webhook-url-secret".into()),
            ..Default::default()
        },
    );
    let (code, stdout, stderr) = run_command(&setup, &["check-config"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Configuration OK"), "{stdout}");
    for secret in [
        "slack-secret-path",
        "webhook-url-secret",
        "webhook-header-secret",
        "eyJhbGciOiJFUzM4NCJ9",
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} shown"
        );
    }
}

#[tokio::test]
async fn replay_with_nothing_parked_exits_0() {
    let broker = testkit::embedded();
    let setup = write_config(&broker, &Destinations::default());
    let (code, _, stderr) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 delivered"), "{stderr}");
}

#[tokio::test]
async fn a_broken_template_stops_run_at_start_with_its_key() {
    let broker = testkit::embedded();
    let setup = write_config(
        &broker,
        &Destinations {
            slack: Some("http://127.0.0.1:9/services/slack".into()),
            slack_formatted: true,
            ..Default::default()
        },
    );
    let template = setup.dir.path().join("broken.handlebars");
    std::fs::write(&template, "{ \"text\": \"{{#each}}\" }").expect("write template");
    let text = std::fs::read_to_string(&setup.butler).expect("config");
    let shipped = templates_dir().join("slack-failed-reload-qscloud.handlebars");
    let text = text.replace(
        &shipped.display().to_string(),
        &template.display().to_string(),
    );
    std::fs::write(&setup.butler, text).expect("write");
    // The same exit code as check-config (78, configuration invalid), so a service manager's
    // RestartPreventExitStatus=78 does not restart a consumer that cannot start.
    let (code, _, stderr) = run_command(&setup, &["run"]).await;
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("slackNotification.reloadAppFailure.templateFile")
            && stderr.contains("Configuration NOT OK"),
        "{stderr}"
    );
    // check-config catches it too, before anything is deployed.
    let (code, stdout, stderr) = run_command(&setup, &["check-config"]).await;
    let output = format!("{stdout}{stderr}");
    assert_eq!(code, 78, "{output}");
    assert!(
        output.contains("slackNotification.reloadAppFailure.templateFile")
            && output.contains("Configuration NOT OK"),
        "{output}"
    );
}

#[tokio::test]
async fn the_version_is_printed_and_is_the_first_log_line_of_run() {
    let version = env!("CARGO_PKG_VERSION");
    let (code, stdout, _) = consumer(&["--version"]).await;
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), format!("consumer {version}"));

    let broker = testkit::embedded();
    let setup = write_config(&broker, &Destinations::default());
    let running = spawn_binary(&setup).await;
    let first = running
        .stderr()
        .lines()
        .next()
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        first.contains(&format!("consumer {version} starting"))
            && first.contains(&setup.butler.display().to_string())
            && first.contains(&setup.extensions.display().to_string()),
        "first log line: {first}"
    );
    running.terminate().await;
}
