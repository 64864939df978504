using System.Diagnostics;
using Swarm.Checkpoints;
using Swarm.Cli.Bench;
using Swarm.Model;
using TorchSharp;
using static TorchSharp.torch;

torch.set_num_threads(Environment.ProcessorCount);
Console.WriteLine($"bw {Roofline.MeasureReadBandwidthGBps():F1} GB/s  mm f32 {Roofline.MeasureMatmulGflops(512,768,3072,ScalarType.Float32):F0} bf16 {Roofline.MeasureMatmulGflops(512,768,3072,ScalarType.BFloat16):F0}");
var dt = args.Length > 1 && args[1] == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;
using var ckpt = Checkpoint.Open(args[0]);
using var m = StageModel.Load(ckpt, 0, ckpt.Config.NumLayers, dt);
Console.WriteLine($"weights read/token {m.WeightBytesReadPerToken/1e6:F0} MB");
using var cache = m.NewCache(1, 256);
using (var p = m.Forward(torch.ones(1, 16, ScalarType.Int64), cache)) {}
var sw = Stopwatch.StartNew();
int n = 64;
for (int i = 0; i < n; i++) { using var s = NewDisposeScope(); var l = m.Forward(torch.ones(1, 1, ScalarType.Int64), cache); l.argmax(-1).item<long>(); }
Console.WriteLine($"decode {n / sw.Elapsed.TotalSeconds:F1} tok/s");
foreach (int T in new[]{128,512}) {
  using var c2 = m.NewCache(1, T);
  sw.Restart();
  using (var p = m.Forward(torch.ones(1, T, ScalarType.Int64), c2)) {}
  Console.WriteLine($"prefill {T}: {T / sw.Elapsed.TotalSeconds:F0} tok/s");
}
