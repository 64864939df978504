using System.Security.Cryptography;
using Swarm.Build;
using Swarm.Engine;
using Swarm.Tests.Presets;
using Xunit;

namespace Swarm.Tests.Engine;

/// <summary>
/// The GLIBCXX_3.4.32 fix (docs: shared/notes/torchsharp-on-debian12.md): the ELF patch on a copy of the real
/// libLibTorchSharp.so, its idempotence, that the NuGet cache is never touched, that the build left a weak copy
/// in the output folder exactly when this system needs it, and the one-line start-up error.
/// </summary>
public class NativeLoadTests
{
    private const string Version = "GLIBCXX_3.4.32";

    /// <summary>The unpatched library as NuGet restored it.</summary>
    private static string NuGetLibrary()
    {
        string root = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var v = typeof(TorchSharp.torch).Assembly.GetName().Version!;
        string path = Path.Combine(root, "torchsharp", $"{v.Major}.{v.Minor}.{v.Build}", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.True(File.Exists(path), $"TorchSharp's native library is not in the NuGet cache at {path}");
        return path;
    }

    private static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    [Fact]
    public void MakeWeak_OnACopyOfTheRealLibrary_PatchesOnceThenIsIdempotent_AndLeavesNuGetCacheAlone()
    {
        string original = NuGetLibrary();
        string cacheHash = Hash(original);
        using var tmp = new TempDir();
        string copy = tmp.Sub("libLibTorchSharp.so");
        File.Copy(original, copy);

        // TorchSharp 0.107's library asks for GLIBCXX_3.4.32 as a strong requirement
        ushort? before = ElfWeakVersion.ReadFlags(copy, Version);
        Assert.NotNull(before);
        Assert.Equal(0, before!.Value & ElfWeakVersion.VerFlagWeak);

        Assert.Equal(ElfWeakVersion.Outcome.Patched, ElfWeakVersion.MakeWeak(copy, Version));
        ushort? after = ElfWeakVersion.ReadFlags(copy, Version);
        Assert.Equal((ushort)(before.Value | ElfWeakVersion.VerFlagWeak), after!.Value);
        byte[] patched = File.ReadAllBytes(copy);
        byte[] orig = File.ReadAllBytes(original);
        Assert.Equal(orig.Length, patched.Length);
        // only the 2-byte vna_flags field changed, by exactly the weak bit
        var changed = Enumerable.Range(0, orig.Length).Where(i => orig[i] != patched[i]).ToArray();
        Assert.Single(changed);
        Assert.Equal(ElfWeakVersion.VerFlagWeak, orig[changed[0]] ^ patched[changed[0]]);

        Assert.Equal(ElfWeakVersion.Outcome.AlreadyWeak, ElfWeakVersion.MakeWeak(copy, Version));
        Assert.Equal(patched, File.ReadAllBytes(copy));

        // other requirements are untouched and still strong
        Assert.Equal(0, ElfWeakVersion.ReadFlags(copy, "GLIBCXX_3.4.29")!.Value & ElfWeakVersion.VerFlagWeak);
        Assert.Equal(cacheHash, Hash(original));
    }

    [Fact]
    public void MakeWeak_VersionNotRequired_ChangesNothing()
    {
        using var tmp = new TempDir();
        string copy = tmp.Sub("lib.so");
        File.Copy(NuGetLibrary(), copy);
        string hash = Hash(copy);
        Assert.Null(ElfWeakVersion.ReadFlags(copy, "GLIBCXX_9.9.99"));
        Assert.Equal(ElfWeakVersion.Outcome.NotRequired, ElfWeakVersion.MakeWeak(copy, "GLIBCXX_9.9.99"));
        Assert.Equal(hash, Hash(copy));
    }

    [Fact]
    public void MakeWeak_NonElfFile_ThrowsClearInvalidData_AndChangesNothing()
    {
        using var tmp = new TempDir();
        string text = tmp.Sub("not-a-library.so");
        File.WriteAllText(text, new string('x', 200));
        var e = Assert.Throws<InvalidDataException>(() => ElfWeakVersion.MakeWeak(text, Version));
        Assert.Contains("not an ELF file", e.Message);
        Assert.Equal(new string('x', 200), File.ReadAllText(text));

        string tiny = tmp.Sub("empty.so");
        File.WriteAllBytes(tiny, [0x7f, (byte)'E', (byte)'L', (byte)'F']);
        Assert.Contains("not an ELF file", Assert.Throws<InvalidDataException>(() => ElfWeakVersion.MakeWeak(tiny, Version)).Message);

        // a 32-bit ELF: refused, not misparsed
        string elf32 = tmp.Sub("elf32.so");
        var bytes = new byte[128];
        bytes[0] = 0x7f; bytes[1] = (byte)'E'; bytes[2] = (byte)'L'; bytes[3] = (byte)'F'; bytes[4] = 1; bytes[5] = 1;
        File.WriteAllBytes(elf32, bytes);
        Assert.Contains("ELF64", Assert.Throws<InvalidDataException>(() => ElfWeakVersion.MakeWeak(elf32, Version)).Message);
    }

    [Fact]
    public void BuildOutputCopy_IsWeakExactlyWhenTheSystemLibStdCxxLacksTheVersion()
    {
        if (!OperatingSystem.IsLinux()) return; // the patch is Linux-only; other platforms ship no .so
        string std = ElfWeakVersion.FindSystemLibStdCxx() ?? throw new InvalidOperationException("no system libstdc++.so.6 found");
        bool systemHasIt = ElfWeakVersion.FileMentions(std, Version);
        Assert.True(ElfWeakVersion.FileMentions(std, "GLIBCXX_3.4"), $"{std} does not look like libstdc++");

        string output = Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so");
        Assert.True(File.Exists(output), $"{output} missing: the build did not copy TorchSharp's native library");
        ushort flags = ElfWeakVersion.ReadFlags(output, Version) ?? throw new InvalidOperationException($"{output} has no {Version} requirement");
        bool weak = (flags & ElfWeakVersion.VerFlagWeak) != 0;
        Assert.True(weak == !systemHasIt,
            $"system libstdc++ {(systemHasIt ? "has" : "lacks")} {Version} but the output copy is {(weak ? "weak" : "strong")}");
        Assert.Equal(0, ElfWeakVersion.ReadFlags(NuGetLibrary(), Version)!.Value & ElfWeakVersion.VerFlagWeak);
    }

    [Fact]
    public void Explain_GlibcxxLoaderFailure_BecomesOneClearMessage()
    {
        // what TorchSharp throws on Debian 12 with an unpatched library (trace shortened)
        var inner = new NotSupportedException(
            "This application or script uses TorchSharp but doesn't contain a reference to libtorch-cpu-linux-x64, Version=2.10.0.0.\n\n" +
            "Trace from LoadNativeBackend:\n    Trying to load native component LibTorchSharp relative to /app/TorchSharp.dll\n" +
            "    Failed to load native component LibTorchSharp: /lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found " +
            "(required by /app/libLibTorchSharp.so)\n    Result from regular native load of LibTorchSharp is False\n");
        var e = new TypeInitializationException("TorchSharp.torch", inner);

        string msg = TorchRuntime.Explain(e);
        Assert.Contains("libLibTorchSharp.so", msg);
        Assert.Contains("GLIBCXX_3.4.32", msg);
        Assert.Contains("libstdc++", msg);
        Assert.Contains("rebuild", msg);           // the remedy …
        Assert.Contains("Debian 13", msg);         // … or the alternative
        Assert.DoesNotContain("\n", msg);          // one message, not the loader trace
        Assert.DoesNotContain("Trace from LoadNativeBackend", msg);
    }

    [Fact]
    public void Explain_MissingNativeLibtorch_And_OtherFailures()
    {
        var missing = new TypeInitializationException("TorchSharp.torch", new NotSupportedException(
            "This application or script uses TorchSharp but doesn't contain a reference to libtorch-cpu-linux-x64, Version=2.10.0.0.\n\nTrace: ..."));
        string msg = TorchRuntime.Explain(missing);
        Assert.Contains("libLibTorchSharp.so", msg);
        Assert.Contains("libtorch-cpu-linux-x64", msg);
        Assert.DoesNotContain("GLIBCXX", msg);

        var other = new DllNotFoundException("Unable to load shared library 'foo'\nsecond line");
        Assert.Equal("cannot initialise TorchSharp: Unable to load shared library 'foo'", TorchRuntime.Explain(other));
    }
}
