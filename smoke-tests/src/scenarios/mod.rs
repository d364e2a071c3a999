//! End-to-end scenarios. Each takes its parsed options and returns an
//! [`Outcome`](crate::Outcome); errors become `FAIL` lines naming the cause.

pub mod vmm_boot;
pub mod vmm_startup;

use crate::cli::Scenario;
use crate::Outcome;

/// Runs the selected scenario.
pub fn run(scenario: &Scenario) -> Outcome {
    match scenario {
        Scenario::VmmBoot(args) => vmm_boot::run(args),
        Scenario::Console(args) => vmm_boot::console(args),
        Scenario::VmmStartup(args) => vmm_startup::run(args),
    }
}
