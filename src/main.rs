use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread: no child process ever sees gvbuild's credentials.
    gvbuild::cli::take_credentials();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == gvbuild::jobs::REAPER_ARG) {
        return ExitCode::from(gvbuild::jobs::reaper_main(&args[2..]));
    }
    match gvbuild::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let code = err.exit_code();
            let color =
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal();
            let text = match &err {
                gvbuild::Error::Config(errors) => errors.render(color),
                other => gvbuild::diag::render(other, color),
            };
            #[allow(clippy::print_stderr)]
            {
                eprint!("{text}");
            }
            ExitCode::from(code)
        }
    }
}
