using System.Net;
using Swarm.Protocol;
using Swarm.Tests.Security;
using Swarm.Transport;
using Xunit;

namespace Swarm.Tests.Transport;

/// <summary>The cheap checks before any cryptography: the connection request's format and the per-address token bucket.</summary>
public class ConnectAdmissionTests
{
    [Fact]
    public void ConnectRequest_CarriesOnlyTheVersionAndMode_AndIsCheckedForBoth()
    {
        var request = ConnectRequest.Build(ProtocolInfo.Version, encrypted: true);
        Assert.Equal(ConnectRequest.Length, request.Length);
        Assert.Equal("SWRM"u8.ToArray(), request[..4]);
        Assert.Null(ConnectRequest.Check(request, ProtocolInfo.Version, encrypted: true));
        Assert.Equal($"protocol version {ProtocolInfo.Version} is not supported (this peer speaks {ProtocolInfo.Version + 1})",
            ConnectRequest.Check(request, ProtocolInfo.Version + 1, encrypted: true));
        Assert.Equal("this peer runs without encryption (a benchmark transport)", ConnectRequest.Check(request, ProtocolInfo.Version, encrypted: false));
        Assert.Equal("malformed connection request (not a Swarm peer?)", ConnectRequest.Check("GET / HTTP"u8, ProtocolInfo.Version, encrypted: true));
    }

    [Fact]
    public void ConnectRequest_OfTheBearerKeyRelease_IsToldToUpgrade()
    {
        var old = new byte[40];
        "SWRM"u8.CopyTo(old);
        BitConverter.TryWriteBytes(old.AsSpan(4), ProtocolInfo.Version);
        Assert.StartsWith("this peer runs a release that sends its swarm key in the clear; upgrade it",
            ConnectRequest.Check(old, ProtocolInfo.Version, encrypted: true));
    }

    [Fact]
    public void RateLimiter_AllowsABurst_ThenTheRate_PerAddress()
    {
        var clock = new SteppedClock();
        var limiter = new ConnectRateLimiter(ratePerSecond: 2, burst: 3, clock);
        var a = IPAddress.Parse("192.0.2.1");
        var b = IPAddress.Parse("192.0.2.2");
        Assert.True(limiter.TryAcquire(a) && limiter.TryAcquire(a) && limiter.TryAcquire(a));
        Assert.False(limiter.TryAcquire(a));
        Assert.True(limiter.TryAcquire(b), "another address has its own bucket");
        clock.Advance(TimeSpan.FromMilliseconds(499));
        Assert.False(limiter.TryAcquire(a));
        clock.Advance(TimeSpan.FromMilliseconds(2));
        Assert.True(limiter.TryAcquire(a), "one token after half a second at 2/s");
        Assert.False(limiter.TryAcquire(a));
        clock.Advance(TimeSpan.FromMinutes(1));
        Assert.True(limiter.TryAcquire(a) && limiter.TryAcquire(a) && limiter.TryAcquire(a));
        Assert.False(limiter.TryAcquire(a), "refill stops at the burst");
    }

    [Fact]
    public void RateLimiter_GroupsIPv6ByTheSlash64_AndMappedIPv4AsIPv4()
    {
        var clock = new SteppedClock();
        var limiter = new ConnectRateLimiter(ratePerSecond: 1, burst: 1, clock);
        Assert.True(limiter.TryAcquire(IPAddress.Parse("2001:db8:1:2::1")));
        Assert.False(limiter.TryAcquire(IPAddress.Parse("2001:db8:1:2:ffff::9")), "same /64");
        Assert.True(limiter.TryAcquire(IPAddress.Parse("2001:db8:1:3::1")), "another /64");
        Assert.True(limiter.TryAcquire(IPAddress.Parse("198.51.100.7")));
        Assert.False(limiter.TryAcquire(IPAddress.Parse("::ffff:198.51.100.7")));
    }

    [Fact]
    public void RateLimiter_Sweep_ForgetsRefilledAddresses_KeepsActiveOnes()
    {
        var clock = new SteppedClock();
        var limiter = new ConnectRateLimiter(ratePerSecond: 1, burst: 2, clock);
        limiter.TryAcquire(IPAddress.Parse("192.0.2.1"));
        clock.Advance(TimeSpan.FromSeconds(5));
        limiter.TryAcquire(IPAddress.Parse("192.0.2.2"));
        limiter.Sweep();
        Assert.Equal(1, limiter.Count);
    }

    [Fact]
    public void Admission_DropsOverTheRateBeforeParsing_RefusesBadRequests_CapsPendingHandshakes()
    {
        var options = new TransportOptions { ConnectBurst = 1, MaxPendingHandshakes = 2, Time = new SteppedClock() };
        var admission = new ConnectionAdmission(options);
        var good = ConnectRequest.Build(ProtocolInfo.Version, encrypted: true);
        var from = new IPEndPoint(IPAddress.Parse("192.0.2.1"), 5000);
        Assert.Equal(AdmissionVerdict.Accept, admission.Decide(from, good, pendingHandshakes: 0, out _));
        Assert.Equal(AdmissionVerdict.Drop, admission.Decide(from, "junk"u8, 0, out var reason));
        Assert.StartsWith("rate limited", reason);
        var other = new IPEndPoint(IPAddress.Parse("192.0.2.9"), 5000);
        Assert.Equal(AdmissionVerdict.Drop, admission.Decide(other, good, pendingHandshakes: 2, out reason));
        Assert.Equal("2 handshakes already in progress (limit 2)", reason);
        var third = new IPEndPoint(IPAddress.Parse("192.0.2.10"), 5000);
        Assert.Equal(AdmissionVerdict.Refuse, admission.Decide(third, "junk"u8, 0, out reason));
        Assert.Equal("malformed connection request (not a Swarm peer?)", reason);
    }

    [Fact]
    public void RefusalShape_OneKindPerCause_WhateverTheKeysAndNumbers()
    {
        string a = TransportDiagnostics.Shape("the peer's key swarm:abcdefghijklmnop is not accepted: the coordinator has not vouched for swarm:abcdefghijklmnop");
        string b = TransportDiagnostics.Shape("the peer's key swarm:qrstuvwxyz234567 is not accepted: the coordinator has not vouched for swarm:qrstuvwxyz234567");
        string c = TransportDiagnostics.Shape("the swarm secrets differ: decryption failed (or the message was altered in transit)");
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.Equal(TransportDiagnostics.Shape("the handshake did not complete within 300 ms"), TransportDiagnostics.Shape("the handshake did not complete within 5000 ms"));
    }
}
