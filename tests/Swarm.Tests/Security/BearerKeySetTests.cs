using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Http;
using Swarm.Coordinator.Security;
using Xunit;

namespace Swarm.Tests.Security;

public sealed class BearerKeySetTests
{
    private const string KeyA = "key-a-0123456789abcdef";
    private const string KeyB = "key-b-fedcba9876543210";

    [Fact]
    public void Contains_EveryConfiguredKey_AndNothingElse()
    {
        var keys = new BearerKeySet([KeyA, KeyB]);

        Assert.False(keys.IsEmpty);
        Assert.True(keys.Contains(KeyA));
        Assert.True(keys.Contains(KeyB));
        foreach (string wrong in new[] { "", KeyA[..^1], KeyA + "0", KeyA.ToUpperInvariant(), " " + KeyA, "key-c-0123456789abcdef" })
            Assert.False(keys.Contains(wrong), $"'{wrong}' was accepted");
    }

    [Fact]
    public void EmptyEntries_AreIgnored_AndAnEmptySetAcceptsNothing()
    {
        var keys = new BearerKeySet(["", null]);
        Assert.True(keys.IsEmpty);
        Assert.False(keys.Contains(""));
        Assert.True(BearerKeySet.None.IsEmpty);
    }

    [Fact]
    public void KeyFor_OpenMetricsAndEverythingElse()
    {
        static Endpoint With(params object[] metadata) => new(_ => Task.CompletedTask, new EndpointMetadataCollection(metadata), "test");

        Assert.Equal(EndpointKey.None, HttpAccessPolicy.KeyFor(With(new AllowAnonymousAttribute())));
        Assert.Equal(EndpointKey.Api, HttpAccessPolicy.KeyFor(With()));
        Assert.Equal(EndpointKey.Api, HttpAccessPolicy.KeyFor(null)); // no route matched: an unknown URL is guarded too
        var metrics = new TestConventions();
        metrics.RequireMetricsKey();
        Assert.Equal(EndpointKey.Metrics, HttpAccessPolicy.KeyFor(With([.. metrics.Metadata])));
    }

    /// <summary>Collects what a convention adds to an endpoint's metadata.</summary>
    private sealed class TestConventions : Microsoft.AspNetCore.Builder.IEndpointConventionBuilder
    {
        public List<object> Metadata { get; } = [];

        public void Add(Action<Microsoft.AspNetCore.Builder.EndpointBuilder> convention)
        {
            var builder = new Microsoft.AspNetCore.Routing.RouteEndpointBuilder(_ => Task.CompletedTask,
                Microsoft.AspNetCore.Routing.Patterns.RoutePatternFactory.Parse("/metrics"), 0);
            convention(builder);
            Metadata.AddRange(builder.Metadata);
        }
    }
}
