//! The routing engine's userspace half: compile a lowered rule set into the kernel's classifier
//! ([`compile`]) and publish it bank by bank ([`publish`]).

pub mod compile;
pub mod publish;

pub use compile::{CompileError, Compiled, compile};
pub use publish::{PublishError, RouteMaps, Router};
