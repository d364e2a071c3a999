//! End-to-end scenarios. Each takes its parsed options and returns an
//! [`Outcome`](crate::Outcome); errors become `FAIL` lines naming the cause.

pub mod agent;
pub mod compositor;
pub mod compositor_drm;
pub mod error;
pub mod gpu_bench;
pub mod guest_qemu;
pub mod host_api;
pub mod host_e2e;
pub mod native;
pub mod nested;
pub mod nested_census;
pub mod session;
pub mod vmm_agent;
pub mod vmm_boot;
pub mod vmm_console;
pub mod vmm_desktop;
pub mod vmm_native;
pub mod vmm_startup;
pub mod vmm_virtiofs;

use crate::cli::Scenario;
use crate::Outcome;
pub use error::ScenarioError;

/// Runs the selected scenario.
pub fn run(scenario: &Scenario) -> Outcome {
    match scenario {
        Scenario::VmmBoot(args) => vmm_boot::run(args),
        Scenario::Console(args) => vmm_boot::console(args),
        Scenario::NestedCensus(args) => nested_census::run(args),
        Scenario::VmmConsole(args) => vmm_console::run(args),
        Scenario::VmmStartup(args) => vmm_startup::run(args),
        Scenario::VmmVirtiofs(args) => vmm_virtiofs::run(args),
        Scenario::VmmNative(args) => vmm_native::run(args),
        Scenario::VmmAgent(args) => vmm_agent::run(args),
        Scenario::VmmDesktop(args) => vmm_desktop::run(args),
        Scenario::Agent(args) => agent::run(args),
        Scenario::Native(args) => native::run(args),
        Scenario::Session(args) => session::run(args),
        Scenario::Compositor(args) => compositor::run(args),
        Scenario::CompositorBench(args) => compositor::bench(args),
        Scenario::GpuBench(args) => gpu_bench::run(args),
        Scenario::CompositorDrm(args) => compositor_drm::run(args),
        Scenario::HostApi(args) => host_api::run(args),
        Scenario::HostE2e(args) => host_e2e::run(args),
        Scenario::Host(args) => host_e2e::interactive(args),
    }
}
