using System.Globalization;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.Extensions.Logging;
using Swarm.Coordinator.Api;
using Swarm.Transport;

namespace Swarm.Coordinator.Service;

/// <summary>
/// Reads a request body of at most <see cref="HttpApi.MaxBodyBytes"/>. A body too large (413) or arriving too slowly
/// (408: Kestrel's minimum data rate) is answered in OpenAI's error shape; a client gone mid-body gets nothing.
/// Slow bodies — which any client can send at will — are logged once per interval, not with an exception each.
/// </summary>
internal sealed partial class RequestBodyReader(ILogger logger)
{
    private readonly RepeatedLogLimiter _repeated = new();

    /// <summary>The body, or null when an error was answered (or the client left) instead.</summary>
    public async Task<byte[]?> ReadAsync(HttpContext ctx)
    {
        var request = ctx.Request;
        try
        {
            if (request.ContentLength > HttpApi.MaxBodyBytes) return await TooLargeAsync(ctx);
            using var ms = new MemoryStream();
            var buffer = new byte[16384];
            int n;
            while ((n = await request.Body.ReadAsync(buffer, ctx.RequestAborted)) > 0)
            {
                ms.Write(buffer, 0, n);
                if (ms.Length > HttpApi.MaxBodyBytes) return await TooLargeAsync(ctx);
            }
            return ms.ToArray();
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status408RequestTimeout)
        {
            var rate = ctx.Features.Get<IHttpMinRequestBodyDataRateFeature>()?.MinDataRate;
            string rule = rate is null ? "" : string.Create(CultureInfo.InvariantCulture,
                $" (the minimum is {rate.BytesPerSecond:0} bytes/s after a {rate.GracePeriod.TotalSeconds:0} s grace period)");
            if (_repeated.ShouldLog(logger, "slow request body")) LogSlowBody(logger, ctx.Connection.RemoteIpAddress?.ToString() ?? "?", rule);
            await HttpApi.WriteErrorAsync(ctx, StatusCodes.Status408RequestTimeout,
                OpenAiErrorResponse.InvalidRequest($"the request body arrived too slowly{rule}", "request_timeout"));
            return null;
        }
        catch (BadHttpRequestException e)
        {
            await HttpApi.WriteErrorAsync(ctx, e.StatusCode, OpenAiErrorResponse.InvalidRequest($"bad request body: {e.Message}", "invalid_body"));
            return null;
        }
        catch (Exception e) when (e is OperationCanceledException or IOException && ctx.RequestAborted.IsCancellationRequested)
        {
            return null; // the client left mid-body: nobody to answer
        }
    }

    private static async Task<byte[]?> TooLargeAsync(HttpContext ctx)
    {
        await HttpApi.WriteErrorAsync(ctx, StatusCodes.Status413PayloadTooLarge, OpenAiErrorResponse.InvalidRequest(
            [new ValidationError("body", $"request body over {HttpApi.MaxBodyBytes} bytes", "body_too_large")]));
        return null;
    }

    [LoggerMessage(120, LogLevel.Warning, "a client at {Client} sent its request body too slowly{Rule}: answered 408")]
    private static partial void LogSlowBody(ILogger logger, string client, string rule);
}
