//! `consumer check-config`: validates the configuration and prints a summary with secrets
//! masked, or every problem with its key path.

use consumer::exit;

use crate::ConfigArgs;

pub fn run(args: &ConfigArgs) -> u8 {
    let extensions = args.extensions();
    let code =
        consumer::check::check_config(&args.config, extensions.as_deref(), &mut std::io::stdout());
    u8::try_from(code).unwrap_or(exit::FAILURE)
}
