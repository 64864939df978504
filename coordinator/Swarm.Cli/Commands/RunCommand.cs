using System.CommandLine;
using System.Text.Json;
using Swarm.Checkpoints;
using Swarm.Engine;
using Swarm.Model;
using Swarm.Node;
using Swarm.Tokenization;
using static TorchSharp.torch;

namespace Swarm.Cli.Commands;

/// <summary>
/// <c>swarm run</c>: one process, no network — load the model as one stage and generate through the stage host a node
/// runs (<see cref="LocalPipeline"/>), streaming tokens to the console or printing one JSON object.
/// </summary>
internal static class RunCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Checkpoint folder (HF layout)", Required = true };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text (needs tokenizer.json in the checkpoint)" };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Prompt as comma-separated token ids" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object" };
        var dtype = new Option<string>("--dtype") { Description = "Compute dtype: f32 (default) or bf16", DefaultValueFactory = _ => "f32" };
        var weights = new Option<string?>("--weights") { Description = "Weight storage: f32, bf16, f16 or int8 (default: --dtype); half and int8 compute in bf16" };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0 = all cores)", DefaultValueFactory = _ => 0 };
        var tp = new Option<int>("--tp") { Description = "Tensor-parallel shards per layer (default 1)", DefaultValueFactory = _ => 1 };
        var devices = new Option<string?>("--devices") { Description = "Device per tensor-parallel shard: cpu (default) or cuda:0,cuda:1,…" };
        var sampling = new CliCommon.SamplingFlags();
        var cmd = new Command("run", "Generate in one process from a checkpoint folder (no network)");
        cmd.Options.Add(model); cmd.Options.Add(prompt); cmd.Options.Add(promptIds); cmd.Options.Add(json);
        cmd.Options.Add(dtype); cmd.Options.Add(weights); cmd.Options.Add(threads); cmd.Options.Add(tp); cmd.Options.Add(devices);
        sampling.AddTo(cmd);
        cmd.SetAction((r, ct) =>
        {
            var opts = sampling.Read(r);
            var computeDtype = CliCommon.ParseDtype(r.GetValue(dtype)!, "--dtype");
            if (computeDtype == ScalarType.Float16) throw new UsageException("--dtype: f16 compute is not supported on CPU; use f32 or bf16 (or --weights f16)");
            var format = r.GetValue(weights) is { } w ? CliCommon.ParseWeights(w, "--weights") : WeightFormatDtypes.FromDtype(computeDtype);
            TensorParallelOptions? tensorParallel = null;
            try
            {
                if (r.GetValue(tp) != 1 || r.GetValue(devices) is not null) tensorParallel = TensorParallelOptions.Parse(r.GetValue(tp), r.GetValue(devices));
            }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            TorchRuntime.Initialize(r.GetValue(threads));
            string dir = r.GetValue(model)!;
            using var ckpt = Checkpoint.Open(dir);
            try { tensorParallel?.Validate(ckpt.Config); }
            catch (ArgumentException e) { throw new UsageException(e.Message); }
            var tokenizer = TokenizerLoader.TryLoad(dir);
            var ids = PromptIds(r.GetValue(prompt), r.GetValue(promptIds), tokenizer);
            bool asJson = r.GetValue(json);
            using var pipeline = LocalPipeline.Load(ckpt, format, Console.IsErrorRedirected ? null : new ConsoleProgress("loading model"), tensorParallel);
            var decoder = tokenizer is null ? null : new IncrementalDecoder(tokenizer);
            var result = pipeline.Generate(ids, opts, asJson ? null : t =>
            {
                Console.Write(decoder is null ? $"{t} " : decoder.Push(t));
                Console.Out.Flush();
            }, ct);
            if (asJson)
            {
                Console.WriteLine(JsonSerializer.Serialize(new
                {
                    token_ids = result.TokenIds,
                    text = tokenizer?.Decode(result.TokenIds) ?? "",
                    prompt_tokens = result.PromptTokens,
                    finish_reason = result.FinishReason,
                    timings = new
                    {
                        prefill_ms = Math.Round(result.Timings.PrefillMs, 3),
                        decode_ms = Math.Round(result.Timings.DecodeMs, 3),
                        time_to_first_token_ms = Math.Round(result.Timings.TimeToFirstTokenMs, 3),
                        decode_tokens_per_s = Math.Round(result.Timings.DecodeTokensPerSecond, 2),
                    },
                }));
            }
            else
            {
                if (decoder is not null) Console.Write(decoder.Flush());
                Console.WriteLine();
                Console.Error.WriteLine($"[{result.TokenIds.Count} tokens, finish={result.FinishReason}, prefill {result.Timings.PrefillMs:F1} ms " +
                                        $"for {result.PromptTokens} tokens, decode {result.Timings.DecodeTokensPerSecond:F1} tokens/s]");
            }
            return Task.FromResult(0);
        });
        return cmd;
    }

    internal static IReadOnlyList<int> PromptIds(string? prompt, string? promptIds, ITextTokenizer? tokenizer)
    {
        if ((prompt is null) == (promptIds is null))
            throw new UsageException("give exactly one of --prompt TEXT or --prompt-ids 1,2,3");
        if (promptIds is not null)
        {
            var ids = CliCommon.ParseIds(promptIds, "--prompt-ids");
            if (ids.Length == 0) throw new UsageException("--prompt-ids: no token ids given");
            return ids;
        }
        if (tokenizer is null)
            throw new UsageException("--prompt: this checkpoint has no tokenizer.json; pass token ids with --prompt-ids");
        var enc = tokenizer.Encode(prompt!);
        if (enc.Count == 0) throw new UsageException("--prompt: the text encodes to no tokens");
        return enc;
    }
}
