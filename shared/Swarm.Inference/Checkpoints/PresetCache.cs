using Swarm.Model;
using static TorchSharp.torch;

namespace Swarm.Checkpoints;

/// <summary>
/// Random-weight preset checkpoints created on first use and kept under <c>$SWARM_CACHE</c>
/// (default <c>~/.cache/swarm/presets</c>). A preset is written to a temporary folder and renamed into
/// place when complete, so an interrupted write never leaves a half checkpoint behind.
/// </summary>
public static class PresetCache
{
    public static string Root => Environment.GetEnvironmentVariable("SWARM_CACHE") is { Length: > 0 } c
        ? Path.Combine(c, "presets")
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "swarm", "presets");

    /// <summary>Returns the folder of the preset, writing it first if it is not cached yet.</summary>
    public static string Ensure(string preset, ScalarType dtype = ScalarType.Float32, long seed = 1,
        IProgress<(long done, long total)>? progress = null)
    {
        Presets.Get(preset); // validates the name
        string dir = Path.Combine(Root, $"{preset}-{PresetWriter.DtypeName(dtype)}-seed{seed}");
        if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        Directory.CreateDirectory(Root);
        string tmp = dir + $".tmp-{Environment.ProcessId}";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        PresetWriter.Write(preset, tmp, dtype, seed, progress);
        try { Directory.Move(tmp, dir); }
        catch (IOException) when (File.Exists(Path.Combine(dir, "config.json")))
        {
            Directory.Delete(tmp, true); // another process finished first
        }
        return dir;
    }
}
