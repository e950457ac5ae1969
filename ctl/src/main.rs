//! `sporectl`: parse the command line, run it, map the outcome to an exit code.

fn main() {
    let cli = sporectl::parse_args();
    let failure_code = cli.failure_code();
    let code = match sporectl::run(cli) {
        Ok(code) => code,
        Err(err) => {
            sporectl::report_error(&err);
            failure_code
        }
    };
    sporectl::exit(code)
}
