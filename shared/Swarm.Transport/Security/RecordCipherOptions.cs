namespace Swarm.Transport.Security;

/// <summary>Settings of the record layer that protects every message after the handshake.</summary>
public sealed class RecordCipherOptions
{
    /// <summary>
    /// The sender moves to the next key epoch (Noise Rekey()) after this many records under one key.
    /// Default 1,000,000 — far inside ChaCha20-Poly1305's limits; the point is forward secrecy over time.
    /// </summary>
    public long RekeyAfterMessages { get; set; } = 1_000_000;

    /// <summary>The sender moves to the next key epoch when the current one is this old at its next record. Default 2 minutes (WireGuard's rekey time).</summary>
    public TimeSpan RekeyAfterTime { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// How many counters behind the newest received one are still accepted once (reordering tolerance); a multiple
    /// of 64. Default 8192, WireGuard's order of magnitude, enough for LiteNetLib's unordered chunks spread over
    /// 64 channels.
    /// </summary>
    public int ReplayWindow { get; set; } = 8192;

    /// <summary>
    /// How many key epochs ahead of its current one a receiver derives keys for (after losing every record of the
    /// epochs in between). Bounds the work a forged header can cause. Default 32.
    /// </summary>
    public int MaxEpochsAhead { get; set; } = 32;

    /// <summary>Clock for <see cref="RekeyAfterTime"/>. Default <see cref="TimeProvider.System"/>.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Every problem with these settings (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (RekeyAfterMessages < 1) errors.Add($"RekeyAfterMessages {RekeyAfterMessages} must be ≥ 1");
        if (RekeyAfterTime <= TimeSpan.Zero) errors.Add($"RekeyAfterTime {RekeyAfterTime} must be positive");
        if (ReplayWindow < 64 || ReplayWindow % 64 != 0 || ReplayWindow > 1 << 20)
            errors.Add($"ReplayWindow {ReplayWindow} must be a multiple of 64 in 64–1048576");
        if (MaxEpochsAhead < 1 || MaxEpochsAhead > 1024) errors.Add($"MaxEpochsAhead {MaxEpochsAhead} is outside 1–1024");
        if (TimeProvider is null) errors.Add("TimeProvider is required");
        return errors;
    }
}
