//! IDM: the host<->guest message protocol (framing, messages, launch config)
