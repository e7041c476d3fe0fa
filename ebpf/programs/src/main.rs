//! Skiff's eBPF programs. One entry module per attach point; shared logic in libraries by concern.
#![no_std]
#![no_main]

mod conntrack;
mod csum;
mod lb;
mod maps;
mod nat;
mod packet;
mod parse;
mod reject;
mod sock;
mod stats;
mod tc;
mod xdp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
