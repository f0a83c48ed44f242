//! `consumer replay`: re-send the alerts parked in the dead-letter directory, or list them.

use std::path::Path;

use anyhow::Context;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use consumer::delivery::{self, DeadLetter};
use consumer::exit;
use consumer::sinks::Purpose;

use super::load;
use crate::ConfigArgs;

/// Lists what is parked; exit [`exit::TRY_AGAIN_LATER`] when at least one alert (of `only_sink`,
/// when given) is, or a file cannot be read, as `replay` would leave it, so a monitoring script
/// needs only the exit code; [`exit::OK`] when none is.
fn list_parked(dir: &Path, only_sink: Option<&str>) -> anyhow::Result<u8> {
    let dead_letter = DeadLetter::new(dir);
    let files = dead_letter.list().context("listing parked alerts")?;
    let mut shown = 0;
    let mut unreadable = 0;
    for path in &files {
        match DeadLetter::read(path) {
            Ok(parked) if only_sink.is_none_or(|s| s == parked.sink) => {
                shown += 1;
                println!(
                    "{}\t{}\t{}\tattempts={}\t{}",
                    parked.parked_at,
                    parked.sink,
                    parked.alert.describe(),
                    parked.attempts,
                    parked.error
                );
            }
            Ok(_) => {}
            Err(e) => {
                unreadable += 1;
                println!("{e}");
            }
        }
    }
    eprintln!("{shown} parked alert(s) in {}", dir.display());
    list_parked_messages(dir)?;
    list_temp_files(&dead_letter)?;
    Ok(if shown + unreadable > 0 {
        exit::TRY_AGAIN_LATER
    } else {
        exit::OK
    })
}

/// Temporary files a crash left: never hidden, since each stands for a write that did not
/// finish.
fn list_temp_files(dead_letter: &DeadLetter) -> anyhow::Result<()> {
    let temp_files = dead_letter
        .temp_files()
        .context("listing leftover temporary files")?;
    for temp in &temp_files {
        let modified = temp
            .modified
            .and_then(|m| OffsetDateTime::from(m).format(&Rfc3339).ok())
            .unwrap_or_else(|| "unknown".into());
        println!(
            "{modified}\ttemporary\t{}\tleft by a crash while writing: the alert (or raw \
             message) it held is either parked under its final name or was never acknowledged \
             (the broker sends it again); `consumer replay` removes it once it is a minute old",
            temp.path.display()
        );
    }
    if !temp_files.is_empty() {
        eprintln!(
            "{} leftover temporary file(s) in {}",
            temp_files.len(),
            dead_letter.dir().display()
        );
    }
    Ok(())
}

/// Raw messages the pipeline parked (a panic or error while handling them): listed, never
/// re-sent by `replay`, since they are not alerts yet.
fn list_parked_messages(dir: &Path) -> anyhow::Result<usize> {
    let messages =
        delivery::parked_message::list_messages(dir).context("listing parked raw messages")?;
    for (path, message) in &messages {
        println!(
            "{}	message	{}	{}	{}",
            message.parked_at,
            message.topic,
            message.reason,
            path.display()
        );
    }
    if !messages.is_empty() {
        eprintln!(
            "{} parked raw message(s) in {}: publish a payload again to its topic to handle it anew",
            messages.len(),
            delivery::parked_message::messages_dir(dir).display()
        );
    }
    Ok(messages.len())
}

pub async fn run(args: &ConfigArgs, only_sink: Option<&str>, list: bool) -> anyhow::Result<u8> {
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    if list {
        return list_parked(&config.consumer.dead_letter_dir, only_sink);
    }
    let dead_letter = DeadLetter::new(&config.consumer.dead_letter_dir);
    // Two replays at once would send each parked alert twice.
    let Some(lock) = dead_letter
        .lock_for_replay()
        .context("replaying parked alerts")?
    else {
        let holder = dead_letter
            .lock_holder()
            .map(|pid| format!(" by process {pid}"))
            .unwrap_or_default();
        eprintln!(
            "replay: {} is held{holder} (another replay, or a running consumer re-sending \
             parked alerts); nothing sent, try again later",
            dead_letter.lock_path().display()
        );
        return Ok(exit::TRY_AGAIN_LATER);
    };
    let sinks = config
        .build_sinks(Purpose::Replay)
        .context("building sinks")?;
    let report = delivery::replay(&lock, &sinks, &config.consumer.retry.clone(), only_sink)
        .await
        .context("replaying parked alerts")?;
    // The first four counts as ever; the others only when they happened, so the usual line
    // stays as it was.
    let mut summary = format!(
        "replay: {} delivered, {} still failing, {} for unknown sinks, {} unreadable",
        report.delivered, report.failed, report.unknown_sink, report.unreadable
    );
    for (count, what) in [
        (report.skipped, "not tried (destination still down)"),
        (
            report.not_removed,
            "delivered but not removed (a later replay sends them again)",
        ),
        (
            report.not_updated,
            "still failing and not updated (file not writable)",
        ),
        (
            report.temp_files_removed,
            "leftover temporary file(s) removed",
        ),
    ] {
        if count > 0 {
            summary.push_str(&format!(", {count} {what}"));
        }
    }
    eprintln!("{summary}");
    list_parked_messages(&config.consumer.dead_letter_dir)?;
    Ok(if report.file_errors() > 0 {
        exit::FAILURE
    } else if report.remaining() > 0 {
        exit::TRY_AGAIN_LATER
    } else {
        exit::OK
    })
}
