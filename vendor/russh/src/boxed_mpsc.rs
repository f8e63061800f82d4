//! (Gatehouse patch) tokio's mpsc queues with every message boxed, for the queues russh makes
//! per connection (the session's handle, priority and inbound-channel queues, the client's
//! replies, each channel's queue to its session).
//!
//! tokio allocates a first block of 32 message slots when a queue is made, so a queue of a
//! 96-byte message holds 3 KiB from the start whether or not it is ever used, and russh makes
//! five of them per client connection and two per server connection: ~15 KiB of every live
//! SSH session that Gatehouse relays (operator side and target side). With boxed messages a
//! first block is 32 pointers (256 bytes); the price is one small allocation per message,
//! which is nothing next to the packet's encryption.
//!
//! The API is the subset of tokio's that russh uses, with the same names and error types.

use std::fmt;
use std::task::{Context, Poll};

use tokio::sync::mpsc as tq;
pub use tq::error::{SendError, TryRecvError, TrySendError};

fn unbox_send<T>(e: SendError<Box<T>>) -> SendError<T> {
    SendError(*e.0)
}

fn unbox_try_send<T>(e: TrySendError<Box<T>>) -> TrySendError<T> {
    match e {
        TrySendError::Full(b) => TrySendError::Full(*b),
        TrySendError::Closed(b) => TrySendError::Closed(*b),
    }
}

/// A bounded queue (see [`tokio::sync::mpsc::channel`]).
pub fn channel<T>(buffer: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tq::channel(buffer);
    (Sender(tx), Receiver(rx))
}

/// An unbounded queue (see [`tokio::sync::mpsc::unbounded_channel`]).
pub fn unbounded_channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let (tx, rx) = tq::unbounded_channel();
    (UnboundedSender(tx), UnboundedReceiver(rx))
}

pub struct Sender<T>(tq::Sender<Box<T>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> Sender<T> {
    pub async fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.0.send(Box::new(value)).await.map_err(unbox_send)
    }

    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.0.try_send(Box::new(value)).map_err(unbox_try_send)
    }

    pub fn blocking_send(&self, value: T) -> Result<(), SendError<T>> {
        self.0.blocking_send(Box::new(value)).map_err(unbox_send)
    }

    pub async fn reserve_owned(self) -> Result<OwnedPermit<T>, SendError<()>> {
        self.0.reserve_owned().await.map(OwnedPermit)
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    pub async fn closed(&self) {
        self.0.closed().await
    }

    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    pub fn max_capacity(&self) -> usize {
        self.0.max_capacity()
    }

    pub fn same_channel(&self, other: &Self) -> bool {
        self.0.same_channel(&other.0)
    }
}

/// Room reserved in a bounded queue (see [`tokio::sync::mpsc::OwnedPermit`]).
pub struct OwnedPermit<T>(tq::OwnedPermit<Box<T>>);

impl<T> fmt::Debug for OwnedPermit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> OwnedPermit<T> {
    pub fn send(self, value: T) -> Sender<T> {
        Sender(self.0.send(Box::new(value)))
    }
}

pub struct Receiver<T>(tq::Receiver<Box<T>>);

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> Receiver<T> {
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await.map(|b| *b)
    }

    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.0.try_recv().map(|b| *b)
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| *b))
    }

    pub fn close(&mut self) {
        self.0.close()
    }
}

pub struct UnboundedSender<T>(tq::UnboundedSender<Box<T>>);

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        UnboundedSender(self.0.clone())
    }
}

impl<T> fmt::Debug for UnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> UnboundedSender<T> {
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        self.0.send(Box::new(value)).map_err(unbox_send)
    }
}

pub struct UnboundedReceiver<T>(tq::UnboundedReceiver<Box<T>>);

impl<T> fmt::Debug for UnboundedReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T> UnboundedReceiver<T> {
    pub async fn recv(&mut self) -> Option<T> {
        self.0.recv().await.map(|b| *b)
    }

    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.0.try_recv().map(|b| *b)
    }

    pub fn close(&mut self) {
        self.0.close()
    }
}
