//! `aya::Pod` for the map key and value types (userspace only).

use crate::{
    Admission, FlowBucket, FlowKey, FlowTag, XdpMeta,
    route::{DomainKey, IfaceKey, MacKey, PnameKey, RouteAction, RouteConfig, RouteProbe, RouteSelector, RuleBits},
    steer::SteerConfig,
};

// SAFETY: each type is #[repr(C)], made only of integers and integer arrays, with explicit padding fields, so
// every bit pattern is a valid value and no byte is uninitialized (layout asserted in its module).
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowTag {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowBucket {}
// SAFETY: as above.
unsafe impl aya::Pod for Admission {}
// SAFETY: as above.
unsafe impl aya::Pod for XdpMeta {}
// SAFETY: as above.
unsafe impl aya::Pod for RuleBits {}
// SAFETY: as above.
unsafe impl aya::Pod for RouteAction {}
// SAFETY: as above.
unsafe impl aya::Pod for RouteConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for RouteSelector {}
// SAFETY: as above.
unsafe impl aya::Pod for RouteProbe {}
// SAFETY: as above.
unsafe impl aya::Pod for IfaceKey {}
// SAFETY: as above.
unsafe impl aya::Pod for MacKey {}
// SAFETY: as above.
unsafe impl aya::Pod for DomainKey {}
// SAFETY: as above.
unsafe impl aya::Pod for PnameKey {}
// SAFETY: as above.
unsafe impl aya::Pod for SteerConfig {}
