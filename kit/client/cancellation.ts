/**
 * Cancels a call as soon as any of `signals` aborts (at once if one already has). Returns the
 * function that stops listening, for when the call ends: a caller's signal may outlive it.
 */
export function linkCancellation(signals: readonly AbortSignal[], cancel: () => void): () => void {
  if (signals.length === 0) return () => {};
  for (const signal of signals) {
    if (signal.aborted) cancel();
    else signal.addEventListener("abort", cancel, { once: true });
  }
  return () => {
    for (const signal of signals) signal.removeEventListener("abort", cancel);
  };
}
