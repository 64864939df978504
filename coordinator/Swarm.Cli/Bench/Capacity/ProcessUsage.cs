using System.Globalization;

namespace Swarm.Cli.Bench.Capacity;

/// <summary>
/// CPU time and resident memory of a process, read from <c>/proc/PID/stat</c> (user + system time, in clock ticks of
/// 10 ms) and <c>/proc/PID/status</c> (VmRSS). Linux only.
/// </summary>
internal static class ProcessUsage
{
    private const double TickMs = 10; // USER_HZ is 100 on every Linux ABI .NET runs on

    /// <summary>User + system CPU milliseconds the process has used so far.</summary>
    public static double CpuMs(int pid)
    {
        string stat = File.ReadAllText($"/proc/{pid}/stat");
        // The command name (field 2) may contain spaces; the fields after its closing parenthesis are fixed.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long utime = long.Parse(fields[11], CultureInfo.InvariantCulture), stime = long.Parse(fields[12], CultureInfo.InvariantCulture);
        return (utime + stime) * TickMs;
    }

    /// <summary>Resident memory in megabytes (VmRSS).</summary>
    public static double ResidentMb(int pid)
    {
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
        return 0;
    }

    /// <summary>The 1-minute load average (<c>/proc/loadavg</c>): how busy the machine was while measuring.</summary>
    public static double LoadAverage() =>
        double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], CultureInfo.InvariantCulture);
}
